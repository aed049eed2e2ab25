"""``renkei import notices``: a 法務局 登記済通知 file into the hub, with the 評価変更リスト."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bus.cli.app import app
from bus.collector import tune_collector
from bus.errors import make_finding
from bus.hub import Hub
from bus.imports.chunk_work import StoreUnwritable
from bus.imports.interrupts import CtrlC
from bus.imports.layout import ImportRefused
from bus.imports.outputs import OutUnusable
from bus.imports.parallel import WorkerLost, available_cpus, default_jobs
from bus.imports.residents import ExtractRefused, ResidentIndex
from bus.imports.runner import ImportOptions, NoticeImport
from bus.observability.logs import configure_logging
from bus.pipeline import Finding
from bus.settings import Settings

EXIT_READ, EXIT_REFUSED, EXIT_UNREADABLE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
INTERRUPTED = (
    "中断しました。同じコマンドをもう一度実行すると続きから取り込みます。"
    " / Interrupted; run the same command again to resume."
)
FINISHED_ANYWAY = (
    "Ctrl-C を受け付けましたが、ファイルは読み終えていたので取込みを最後まで終えました"
    "（上の件数のとおりです。もう一度実行する必要はありません）。"
    " / Ctrl-C came after the whole file was read: the import was finished"
    " (as counted above; no need to run it again)."
)
RECORDS = "{task.fields[records]:,} 件  {task.fields[rate]} 件/秒  エラー {task.fields[errors]:,}"

import_app = typer.Typer(help="Batch imports (一括取込み).")
app.add_typer(import_app, name="import")


def resident_index(settings: Settings) -> ResidentIndex:
    return ResidentIndex(settings.data_dir / "imports" / "residents.sqlite")


def show(console: Console, finding: Finding, colour: str = "red") -> None:
    console.print(f"[{colour}]{finding.code}[/] {finding.message_ja} / {finding.message_en}")


def unusable(console: Console, finding: Finding) -> NoReturn:
    """An input or output that cannot be used: refused before anything is imported."""
    show(console, finding)
    raise typer.Exit(EXIT_UNREADABLE)


def feed_index(
    console: Console, index: ResidentIndex, hub: Hub, tenant: str, residents: Path | None
) -> None:
    """The extract (when given) and the 住民異動通知 stored since the last import into the
    index; an unreadable index is only a warning (owners 未照合), loading into it is refused."""
    if residents is not None:
        index.load_extract(residents, tenant)
    if index.unreadable is None:
        try:
            index.refresh(hub.store.sessions, tenant)  # a damaged index: unreadable
        except Exception as error:  # the import goes on: owners are reported 未照合
            console.print(
                f"[yellow]住民データの索引を更新できません（所有者は未照合になります）：{error}[/]"
            )
    if index.unreadable is not None:
        actual = f"{index.path}: {index.unreadable}"
        show(console, make_finding("RK-IMP009", path="/residents", actual=actual), "yellow")
    elif (outdated := index.outdated_warning(tenant)) is not None:  # matched, some missed
        show(console, outdated, "yellow")


@import_app.command("notices")
def notices(
    file: Annotated[Path, typer.Argument(help="登記済通知ファイル (CSV or fixed width)")],
    tenant: Annotated[str, typer.Option(help="団体コード (6 digits)")],
    layout: Annotated[
        str | None,
        typer.Option(
            help="mapping: a file, or the name of a shipped one (houmu_fixed);"
            " default: houmu, the CSV layout"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder for the list and error report")] = None,
    encoding: Annotated[str, typer.Option(help="CSV outputs: utf-8 (with BOM) or cp932")] = "utf-8",
    residents: Annotated[
        Path | None, typer.Option(help="宛名 extract CSV loaded into the resident index first")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="worker processes (default: one per CPU, at most 4; 1 for a file under 4 MiB)",
        ),
    ] = None,
) -> None:
    """Import 登記済通知; summary: 新規 N / 重複 N / エラー N (exit 0 when the file was read)."""
    console = Console(stderr=True)
    encoding = encoding.lower()
    if encoding not in ("utf-8", "cp932"):
        raise typer.BadParameter("utf-8 or cp932", param_hint="--encoding")
    if not file.is_file():
        unusable(console, make_finding("RK-IO001", path=str(file), actual="not a file"))
    configure_logging("WARNING")  # library warnings as JSON; no line per record
    settings = Settings()
    hub = Hub.open(settings)
    index = resident_index(settings)
    job: NoticeImport | None = None
    ctrl_c = CtrlC()  # Ctrl-C taken where the batch stays consistent (bus.imports.interrupts)
    try:
        size = file.stat().st_size
        workers = jobs or default_jobs(size)
        if workers > (cpus := available_cpus()):
            console.print(
                f"[yellow]作業プロセスは CPU の数（{cpus}）までにします / --jobs {workers} is"
                f" more than the {cpus} CPUs available: {cpus} are used[/]"
            )
            workers = cpus
        options = ImportOptions(file, tenant, layout, out, encoding, jobs=workers)
        # refused here (tenant, layout, header, --out: RK-IO002, a run in progress) before
        # anything is stored, the extract included
        job = NoticeImport(hub, options, index)
        feed_index(console, index, hub, tenant, residents)
        tune_collector(settings.gc_young_threshold)
        with Progress(
            TextColumn("[bold]登記済通知"),
            BarColumn(),
            TextColumn(RECORDS),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("import", total=size, records=0, errors=0, rate="-")

            def advance(records: int, errors: int, read: int) -> None:
                elapsed = bar.tasks[task].elapsed or 0.0
                rate = f"{records / elapsed:,.0f}" if elapsed else "-"
                bar.update(task, completed=read, records=records, errors=errors, rate=rate)

            ctrl_c.listen()
            summary = job.run(advance, ctrl_c)
            bar.update(task, completed=size)
        for path in summary.outputs:
            console.print(f"出力：{path}")
        typer.echo(f"新規 {summary.new} / 重複 {summary.duplicate} / エラー {summary.errors}")
    except (ImportRefused, WorkerLost, StoreUnwritable, ExtractRefused) as failed:
        show(console, failed.finding)
        codes = {
            ImportRefused: EXIT_REFUSED,
            OutUnusable: EXIT_UNREADABLE,
            WorkerLost: EXIT_STOPPED,
            StoreUnwritable: EXIT_STOPPED,
        }
        raise typer.Exit(codes.get(type(failed), EXIT_UNREADABLE)) from None
    except KeyboardInterrupt:  # the chunks in hand were finished and committed (Ctrl-C once)
        console.print(f"[yellow]{INTERRUPTED}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if job is not None:
            job.close()  # and an --out folder it created, when nothing was written in it
        index.close()
        hub.close()
        ctrl_c.release()
    if ctrl_c.pressed:  # finished all the same: never a silent 0 after Ctrl-C
        console.print(f"[yellow]{FINISHED_ANYWAY}[/]")
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_READ)
