"""``renkei mapping check|test|apply|coverage``: the integrator's tools for mapping files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.catalogue import load_catalogue
from bus.cli import output
from bus.cli.app import app
from bus.errors import make_finding
from bus.mapping import Mapping, MappingError, load_mapping
from bus.mapping.coverage import coverage
from bus.mapping.envelope import wrap
from bus.mapping.golden import cases, run_case, stray_files
from bus.mapping.section import Direction, Translation
from bus.pipeline import Finding
from bus.validation.validator import Validator

mapping_app = typer.Typer(help="Mapping files (変換定義): check, test, apply, coverage.")
app.add_typer(mapping_app, name="mapping")

EXIT_OK, EXIT_FAILED, EXIT_INVALID_FILE = 0, 1, 2
FileArgument = Annotated[Path, typer.Argument(help="A mapping file (mappings/<system>.yaml).")]


def _load(path: Path) -> Mapping:
    try:
        return load_mapping(path)
    except MappingError as error:
        _print_load_errors(path, error)
        raise typer.Exit(EXIT_INVALID_FILE) from None


def _print_load_errors(path: Path, error: MappingError) -> None:
    count = len(error.findings)
    typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''}", err=True)
    _print_findings(error.findings)


def _print_findings(findings: list[Finding]) -> None:
    """One line a finding: code, path (``/record[n]/field``, or ``file:line:column`` for a
    load error), Japanese / English, the value (masked when personal) and the specifics."""
    for finding in findings:
        value = f" 値/value: {finding.value_masked}" if finding.value_masked is not None else ""
        where = (
            f" ({finding.detail})" if finding.code.startswith("RK-MAP") and finding.detail else ""
        )
        typer.echo(
            f"  {finding.code} {finding.path} {finding.message_ja} / {finding.message_en}"
            f"{value}{where}",
            err=True,
        )


@mapping_app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="Mapping files.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Per file: ok, system, sections, findings (JSON).")
    ] = False,
) -> None:
    """Load and check mapping files against the catalogue (each problem a coded finding at
    its file:line:column)."""
    failed = False
    report: list[dict[str, Any]] = []
    for path in files:
        try:
            mapping = load_mapping(path)
        except MappingError as error:
            failed = True
            report.append(
                {
                    "file": str(path),
                    "ok": False,
                    "system": None,
                    "sections": [],
                    "findings": [finding.as_dict() for finding in error.findings],
                }
            )
            if not as_json:
                _print_load_errors(path, error)
            continue
        names = [f"{service} {direction}" for service, direction in sorted(mapping.sections)]
        report.append(
            {
                "file": str(path),
                "ok": True,
                "system": mapping.system,
                "sections": names,
                "findings": [],
            }
        )
        if not as_json:
            typer.echo(f"{path}: ok ({mapping.system}: {', '.join(names)})")
    if as_json:
        output.print_json(report)
    raise typer.Exit(EXIT_INVALID_FILE if failed else EXIT_OK)


def standard_findings(
    validator: Validator, translation: Translation, service: str, system: str, tenant: str
) -> list[Finding]:
    """The normal validator's findings on a standard-bound result (in a fresh envelope)."""
    assert translation.output is not None
    report = validator.validate(wrap(translation.output, service, tenant, system))
    return list(report.findings)


@mapping_app.command("test")
def test(path: FileArgument) -> None:
    """Run the golden samples next to the mapping (golden/<mapping file stem>/ beside it)."""
    mapping = _load(path)
    validator = Validator()
    passed = failed = 0
    for case in cases(mapping):
        result = run_case(mapping, case)
        problems = [f for f in result.findings if f.severity.value == "error"]
        if result.passed and case.direction == "inbound":
            section = mapping.section(case.service, case.direction)
            assert section is not None
            translation = section.translate(case.input.read_bytes())
            problems += [
                f
                for f in standard_findings(
                    validator,
                    translation,
                    case.service,
                    mapping.system,
                    mapping.params.get("tenant", "412066"),
                )
                if f.severity.value == "error"
            ]
        if result.passed and not problems:
            passed += 1
            typer.echo(f"PASS {case.input.name}")
            continue
        failed += 1
        typer.echo(f"FAIL {case.input.name}")
        if result.diff:
            typer.echo(result.diff)
        _print_findings(problems or result.findings)
    for stray in stray_files(mapping):  # a misspelt name would otherwise be skipped unseen
        failed += 1
        typer.echo(
            f"FAIL {stray.name}: not a golden sample "
            "(<Service>.<inbound|outbound>.<label>.input|expected.<ext>, an expected output "
            "beside its input)"
        )
    typer.echo(f"{passed} passed, {failed} failed")
    if passed + failed == 0:
        typer.echo(f"no golden samples under {mapping.golden_dir}", err=True)
    raise typer.Exit(EXIT_FAILED if failed or passed == 0 else EXIT_OK)


@mapping_app.command("apply")
def apply(
    path: FileArgument,
    input_file: Annotated[
        Path,
        typer.Argument(
            help="A system document or record file (inbound), a standard message (outbound)."
        ),
    ],
    service: Annotated[
        str, typer.Option(help="The service (default: the only one in the file).")
    ] = "",
    direction: Annotated[
        str, typer.Option(help="inbound (system → standard) or outbound.")
    ] = "inbound",
    tenant: Annotated[str, typer.Option(help="Tenant for the validation envelope.")] = "",
) -> None:
    """Translate INPUT and print the result; a standard-bound result is then validated.
    A CSV or fixed-width file is translated record by record."""
    mapping = _load(path)
    if direction not in ("inbound", "outbound"):
        raise typer.BadParameter("inbound or outbound", param_hint="--direction")
    chosen: Direction = "inbound" if direction == "inbound" else "outbound"
    services = sorted({s for s, d in mapping.sections if d == chosen})
    name = service or (services[0] if len(services) == 1 else "")
    section = mapping.section(name, chosen)
    if section is None:
        if not services:
            typer.echo(f"{path}: no {chosen} section (choose --direction)", err=True)
        else:
            typer.echo(f"choose --service from {', '.join(services)}", err=True)
        raise typer.Exit(EXIT_INVALID_FILE)
    try:
        data = input_file.read_bytes()
    except OSError as error:
        typer.echo(f"{input_file}: {error.strerror}", err=True)
        raise typer.Exit(EXIT_INVALID_FILE) from None
    if chosen == "inbound" and section.format.multi_record:
        results = list(section.translate_records(data))
        if not results:  # an empty file, or a header alone: say so rather than print nothing
            finding = make_finding(
                "RK-MAP005", path="/", expected=section.format.name, actual="no record"
            )
            results = [Translation(1, None, [finding])]
    else:
        results = [section.translate(data)]
    validator = Validator()
    failed = False
    for translation in results:
        findings = list(translation.findings)
        if translation.output is not None and chosen == "inbound":
            findings += standard_findings(
                validator,
                translation,
                name,
                mapping.system,
                tenant or mapping.params.get("tenant", "412066"),
            )
        if translation.output is not None:
            sys.stdout.buffer.write(translation.output + (b"\n" if chosen == "inbound" else b""))
        if any(f.severity.value == "error" for f in findings) or translation.output is None:
            failed = True
        if findings:
            typer.echo(f"record {translation.number}:", err=True)
            _print_findings(findings)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@mapping_app.command("coverage")
def coverage_command(
    files: Annotated[list[Path], typer.Argument(help="Mapping files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
) -> None:
    """Which of the 114 catalogue items the systems produce or consume."""
    mappings = [_load(path) for path in files]
    found = coverage(mappings)
    counts = found.counts()
    catalogue = load_catalogue()
    if as_json:
        items = [
            {
                "id": i.id,
                "name_ja": i.name_ja,
                "kind": i.kind,
                "produced": i.id in found.produced,
                "consumed": i.id in found.consumed,
            }
            for i in catalogue.catalogue_items()
        ]
        output.print_json({**counts, "items": items})
        return
    table = output.table(
        "id",
        "名称",
        "kind",
        "produced",
        "consumed",
        title=f"{counts['standard_used']} of {counts['standard_total']} standard items used, "
        f"{counts['extension_used']} of {counts['extension_total']} extension items",
        ids=("id",),
    )
    for item in catalogue.catalogue_items():
        table.add_row(
            item.id,
            item.name_ja,
            item.kind,
            "○" if item.id in found.produced else "",
            "○" if item.id in found.consumed else "",
        )
    output.print_tables(table)
