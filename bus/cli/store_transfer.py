"""``renkei store copy``: move an embedded hub's store (SQLite) to PostgreSQL
(docs/operations.md, 組み込み(SQLite)から PostgreSQL への移行); ``renkei store compact``: give
the disk back the room ``renkei purge`` freed (保存期間と領域の回収)."""

from __future__ import annotations

from pathlib import Path
from time import monotonic
from typing import Annotated

import typer

from bus.cli import output
from bus.cli.app import app
from bus.cli.config import actor
from bus.settings import Settings
from bus.store.transfer import (
    DEFAULT_BATCH_ROWS,
    CopyRefused,
    CopyReport,
    Progress,
    copy_store,
    source_url,
)

EXIT_REFUSED = 1
#: Seconds between two progress lines of one table.
PROGRESS_EVERY_S = 2.0

store_app = typer.Typer(help="The message store as a whole (ストア): copy it to PostgreSQL.")
app.add_typer(store_app, name="store")


class _ProgressLines:
    """One line on standard error per table every few seconds, and when a table is done."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, step: Progress) -> None:
        finished = step.done >= step.total
        if not finished and monotonic() - self._last < PROGRESS_EVERY_S:
            return
        self._last = monotonic()
        share = f"{100 * step.done // step.total}%" if step.total else "100%"
        rate = round(step.done / step.seconds) if step.seconds > 0 else step.done
        counted = f"{step.done:,} / {step.total:,} 行 rows"
        typer.echo(f"{step.table}: {counted} ({share}, {rate:,} 行/秒 rows/s)", err=True)


def _summary(report: CopyReport, data_dir: Path) -> None:
    rate = round(report.rows / report.seconds) if report.seconds else report.rows
    typer.echo(f"コピー元 source: {report.source}\nコピー先 target: {report.target}")
    for table in report.tables:
        typer.echo(f"  {table.table:<20} {table.rows:>12,}")
    verdict = "OK" if not report.inherited_breaks else "コピー元から壊れていた broken in the source"
    typer.echo(
        f"計 total {report.rows:,} 行 rows, {report.seconds:.1f} s ({rate:,} 行/秒 rows/s); "
        f"件数一致 counts equal; 監査チェーン audit chains {report.audit_chains} "
        f"({report.audit_records:,} records) {verdict}"
    )
    for broken in report.inherited_breaks:
        typer.echo(f"  RK-AUD001 {broken}", err=True)
    imports = sorted((data_dir / "imports").glob("*.sqlite"))
    typer.echo(
        f"データフォルダに残るもの kept in RENKEI_DATA_DIR ({data_dir}): secrets.key, "
        f"imports/ ({len(imports)} files: batches, resume cursors, resident index)"
    )


@store_app.command("copy")
def copy_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Target PostgreSQL URL (an empty database), e.g. postgresql+psycopg://…; "
            "the password may be left to ~/.pgpass or PGPASSWORD.",
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Source SQLite file or URL (default: RENKEI_DATABASE_URL, else "
            "<RENKEI_DATA_DIR>/renkei.db).",
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=100_000, help="Rows per insert batch.")
    ] = DEFAULT_BATCH_ROWS,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
) -> None:
    """Copy every table of a stopped embedded hub into an empty PostgreSQL database, with its
    keys, then verify counts and audit chains (one transaction: a failure leaves it empty)."""
    settings = Settings()
    origin = source_url(source) if source else settings.effective_database_url
    try:
        report = copy_store(
            origin,
            to,
            settings=settings,
            batch_rows=batch,
            progress=_ProgressLines(),
            actor=actor(),
        )
    except CopyRefused as refused:
        finding = refused.finding
        typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    if as_json:
        output.print_json(report.as_json())
    else:
        _summary(report, settings.data_dir)


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.1f} MiB"


@store_app.command("compact")
def compact_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
) -> None:
    """Give the disk back the room purged messages left free in the store. SQLite: in short
    steps beside the running hub; a store created before 2026-11-29 is rebuilt once instead,
    with the hub stopped and free disk about the size of what it holds (RK-OPS030, RK-OPS031).
    PostgreSQL: VACUUM (ANALYZE) of the purged tables (the room becomes reusable)."""
    from bus.store.compact import CompactRefused, compact, space
    from bus.store.db import open_store
    from bus.store.transfer import processes_holding

    store = open_store(Settings())
    try:
        found = space(store.engine)
        if found is not None and not as_json:
            how = "段階的 in steps" if found.auto_vacuum == "incremental" else "作り直し rebuild"
            typer.echo(
                f"回収できる領域 reclaimable: {_mib(found.reclaimable)} "
                f"({found.free_pages:,} / {found.pages:,} pages); {how}",
                err=True,
            )
        try:
            report = compact(store.engine, actor=actor(), holders=processes_holding)
        except CompactRefused as refused:
            finding = refused.finding
            typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
            raise typer.Exit(EXIT_REFUSED) from None
    finally:
        store.close()
    if as_json:
        output.print_json(report.as_json())
        return
    typer.echo(
        f"compacted ({report.method}): {_mib(report.bytes_before)} → {_mib(report.bytes_after)}"
        f" in {report.seconds:.1f} s"
    )
    if report.method == "vacuum":
        typer.echo(
            "PostgreSQL: 削除した行の領域は再利用できるようになりました（ディスクへは返しません）"
            " / the purged rows' room is reusable now (not given back to the disk: VACUUM FULL"
            " in a maintenance window, docs/operations.md)",
            err=True,
        )
