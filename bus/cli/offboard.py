"""``renkei tenants export`` and ``renkei tenants purge``: a town leaving the shared hub,
共同利用からの脱退 (docs/operations.md). The work is bus/store/offboard.py; refusals are coded
findings on stderr, exit status 1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bus.cli import output
from bus.cli.config import actor
from bus.cli.identities import _index, _refuse, _store, tenants_app

if TYPE_CHECKING:
    from bus.store.db import Store

CodeArgument = Annotated[str, typer.Argument(help="全国地方公共団体コード.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def _configured(code: str) -> tuple[str | None, bool | None]:
    """The tenant's name and whether it is enabled; (None, None) when the configuration no
    longer has it (its data may still be in the store). A malformed code is RK-TEN001."""
    from bus.errors import make_finding
    from bus.rules.check_digits import lg_code_valid

    if not (len(code) == 6 and code.isdigit() and lg_code_valid(code)):
        raise _refuse(make_finding("RK-TEN001", path="/tenant", actual=code[:12]))
    with _store() as store:
        for tenant in _index(store).config.tenants:
            if tenant.code == code:
                return tenant.name, tenant.enabled
    return None, None


def purged_on(store: Store) -> dict[str, str]:
    """Tenant code → the day (JST) its data was last removed, from the admin chain."""
    from bus import wareki
    from bus.store.admin_audit import admin_records
    from bus.store.audit import utc

    with store.sessions() as session:
        records = admin_records(session, action="tenant.purge", limit=100_000)
    return {  # oldest first: a town purged twice keeps its last purge's day
        str(r.detail.get("tenant")): utc(r.at).astimezone(wareki.JST).date().isoformat()
        for r in records
    }


@tenants_app.command("export")
def tenants_export(
    code: CodeArgument,
    out: Annotated[
        Path,
        typer.Option("--out", help="A new or empty directory for the export.", file_okay=False),
    ],
    as_json: AsJson = False,
) -> None:
    """Write everything the hub holds of one town, with a manifest: its handover."""
    from bus.store.offboard import OffboardRefused, export_tenant

    name, enabled = _configured(code)
    with _store() as store:
        try:
            manifest = export_tenant(
                store.sessions, code, out, name=name, enabled=enabled, actor=actor()
            )
        except OffboardRefused as refused:
            raise _refuse(refused.finding) from None
    if as_json:
        output.print_json(manifest)
        return
    counts, waiting = manifest["counts"], manifest["unresolved"]
    typer.echo(
        f"exported: {code} {name or '-'} → {out}: {counts['messages']} message(s),"
        f" {counts['deliveries']} delivery(ies), {counts['auditRecords']} audit record(s),"
        f" {counts['adminRecords']} admin record(s)"
    )
    if enabled:
        typer.echo(f"note: {code} is still enabled; disable it before the final export", err=True)
    if waiting["pending"] or waiting["dead"]:
        typer.echo(
            f"note: pending={waiting['pending']} dead={waiting['dead']}: resolve them"
            " (renkei dlq list --tenant) and export again before renkei tenants purge",
            err=True,
        )
    if not manifest["chainVerified"]:
        typer.echo(f"note: {code}'s audit chain does not verify (renkei audit verify)", err=True)


@tenants_app.command("purge")
def tenants_purge(
    code: CodeArgument,
    export: Annotated[
        Path,
        typer.Option(
            "--export", help="The export handed over (renkei tenants export).", file_okay=False
        ),
    ],
    as_json: AsJson = False,
) -> None:
    """Remove a disabled, resolved town's personal data once its export was handed over."""
    from bus.settings import Settings
    from bus.store.offboard import OffboardRefused, purge_tenant, vars_of

    _name, enabled = _configured(code)
    with _store() as store:
        try:
            report = purge_tenant(
                store.sessions,
                code,
                export,
                enabled=enabled,
                data_dir=Settings().data_dir,
                actor=actor(),
            )
        except OffboardRefused as refused:
            raise _refuse(refused.finding) from None
    if as_json:
        output.print_json(vars_of(report))
        return
    typer.echo(
        f"purged: {code}: {report.messages} message(s), {report.deliveries} delivery(ies),"
        f" {report.sequences} sequence(s),"
        f" {report.resident_rows} resident index row(s), {report.import_files} import file(s);"
        " its audit chain is kept"
    )
