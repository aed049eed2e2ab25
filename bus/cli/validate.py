"""``renkei validate``, ``renkei catalog``, ``renkei samples``: the message set's commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bus.catalogue import load_catalogue
from bus.cli import output
from bus.cli.app import app
from bus.errors import make_finding
from bus.pipeline import Finding, Severity
from bus.validation.validator import AtenaCheck, Validator, ValidatorOptions

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


@app.command()
def catalog(
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
) -> None:
    """List the catalogue: 72 standard + 42 extension items (データ項目一覧)."""
    catalogue = load_catalogue()
    items = list(catalogue.catalogue_items())
    if as_json:
        output.print_json([i.as_json() for i in items])
        return
    table = output.table(
        "id",
        "名称",
        "kind",
        "rule",
        "type",
        title=f"renkei catalogue: {catalogue.count('standard')} standard + "
        f"{catalogue.count('extension')} extension items",
        ids=("id",),
    )
    for item in items:
        table.add_row(item.id, item.name_ja, item.kind, item.rule, item.xsd_type)
    output.print_tables(table)


@dataclass(frozen=True, slots=True)
class FileResult:
    file: str
    valid: bool
    service: str | None
    findings: list[Finding]

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "valid": self.valid,
            "service": self.service,
            "findings": [finding.as_dict() for finding in self.findings],
        }


def _validate_file(validator: Validator, path: Path) -> tuple[FileResult, bool]:
    """The result, and whether the file could be read at all."""
    try:
        data = path.read_bytes()
    except OSError as error:
        finding = make_finding("RK-IO001", path=str(path), actual=error.strerror or str(error))
        return FileResult(str(path), False, None, [finding]), False
    report = validator.validate(data)
    return FileResult(str(path), report.valid, report.service, report.findings), True


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="PlatformMessage or SOAP XML files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Findings as JSON on stdout.")] = False,
    atena_check: Annotated[
        AtenaCheck, typer.Option(help="宛名番号/世帯番号 check digit: off, warn or error.")
    ] = AtenaCheck.WARN,
) -> None:
    """Validate messages. Exit 0 valid (warnings allowed), 1 invalid, 2 unreadable file."""
    validator = Validator(ValidatorOptions(atena_check=atena_check))
    outcomes = [_validate_file(validator, path) for path in files]
    results = [result for result, _ in outcomes]
    if as_json:
        payload = [result.as_dict() for result in results]
        output.print_json(payload)
    else:
        _print_results(results)
    if not all(readable for _, readable in outcomes):
        raise typer.Exit(EXIT_UNREADABLE)
    raise typer.Exit(EXIT_VALID if all(r.valid for r in results) else EXIT_INVALID)


def _print_results(results: list[FileResult]) -> None:
    console = Console()
    for result in results:
        mark = "[green]OK 有効[/]" if result.valid else "[red]NG 無効[/]"
        console.print(f"{mark}  {result.file}  {result.service or ''}")
        for finding in result.findings:
            colour = "red" if finding.severity is Severity.ERROR else "yellow"
            console.print(f"  [{colour}]{finding.code}[/] {finding.path}")
            console.print(f"      {finding.message_ja}")
            console.print(f"      {finding.message_en}", style="dim")


samples_app = typer.Typer(help="Sample messages for integrators and tests.", no_args_is_help=True)
app.add_typer(samples_app, name="samples")


@samples_app.command("generate")
def samples_generate(
    out: Annotated[Path, typer.Option(help="Directory to write <Service>/*.xml into.")] = Path(
        "samples/messages"
    ),
) -> None:
    """Write the sample set: valid and invalid (one broken rule each) messages per service."""
    from bus.samplegen.sample_set import write_sample_set

    written = write_sample_set(out)
    Console().print(f"{len(written)} 件のサンプルを書き出しました / samples written to {out}")
