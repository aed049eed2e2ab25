"""``renkei messages trail``: one resident's messages, deliveries and operator actions (開示請求・
提供記録), on the terminal, as JSON or as a CSV file for staff (docs/data-protection.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bus.cli import options, output
from bus.cli.store import JsonOption, _actor, _json, _store, messages_app
from bus.settings import Settings
from bus.store.queries import StoreQueryError
from bus.store.trail import ResidentTrail, check_lookup, resident_trail
from bus.store.trail_report import header, pseudonym_key, rows, trail_csv


@messages_app.command("trail")
def trail_command(
    tenant: Annotated[str, typer.Option("--tenant", help="全国地方公共団体コード (6 digits).")],
    resident: Annotated[
        str,
        typer.Option(
            "--resident",
            help="宛名番号 (digits; never printed in clear). '-' reads it from standard input, "
            "so it is not in the process list other accounts can read.",
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(help="Only what happened at or after (ISO, or a 和暦 day)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write a CSV (UTF-8 with BOM, CRLF) for staff here."),
    ] = None,
    with_wareki: Annotated[
        bool, typer.Option("--wareki", help="Add a 和暦 column to the CSV.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """One resident's trail: every stored message about the 宛名番号, where it went, and
    what operators did with it; the lookup is recorded on the admin chain (message.trail)."""
    start = options.moment(since, "--since")
    if resident == "-":
        resident = sys.stdin.readline().strip()
    try:
        check_lookup(tenant, resident)  # before the store is opened or the key created
    except StoreQueryError as error:
        raise options.usage_error(error.finding, error.finding.path) from None
    with _store() as store, store.sessions.begin() as session:
        found = resident_trail(
            session,
            tenant=tenant,
            resident=resident,
            actor=_actor(),
            pseudonym_key=pseudonym_key(Settings()),
            since=start,
        )
    if out is not None:
        _write_csv(out, found, with_wareki)
    if as_json:
        _json(found.as_dict())
    elif out is not None:
        typer.echo(f"{out}: {len(found.messages)} message(s), {len(found.provisions)} provision(s)")
    else:
        _print(found)


def _write_csv(path: Path, found: ResidentTrail, with_wareki: bool) -> None:
    from bus.imports.outputs import replaced  # written whole, then renamed into place

    with replaced(path) as temporary:
        temporary.write_bytes(trail_csv(found, with_wareki))


def _print(found: ResidentTrail) -> None:
    table = output.table(
        *header(False),
        title=f"trail {found.tenant} {found.resident} ({len(found.messages)} message(s))",
        ids=("messageId",),
        right=("試行回数",),
    )
    for row in rows(found, False):
        table.add_row(*row)
    output.print_tables(table)
