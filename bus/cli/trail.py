"""``renkei messages trail``: one resident's messages, deliveries and operator actions (開示請求・
提供記録), on the terminal, as JSON or as a CSV file for staff (docs/data-protection.md)."""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from bus import wareki
from bus.cli import options, output
from bus.cli.store import JsonOption, _actor, _json, _store, messages_app
from bus.settings import Settings
from bus.store.queries import StoreQueryError
from bus.store.trail import ResidentTrail, check_lookup, resident_trail

#: the key of the lookups' ``resident_key`` pseudonyms, derived from the hub's secrets key
_PSEUDONYM_LABEL = b"renkei.trail.resident"

COLUMNS = (
    "日時",
    "区分",
    "messageId",
    "サービス",
    "種別",
    "関係",
    "宛名番号（マスク）",
    "送信元システム",
    "提供先システム",
    "状態",
    "試行回数",
    "操作者",
)
KINDS_JA = {"notification": "通知", "inquiry": "照会", "reply": "応答"}
RELATIONS_JA = {
    "subject": "本人",
    "corrects": "本人の通知が訂正・取消した元の通知",
    "corrected": "本人の通知を訂正・取消した通知",
    "reply": "本人についての照会への応答",
}
STATES_JA = {
    "delivered": "配信済",
    "pending": "未配信（配信待ち）",
    "dead": "配信不能（保留中）",
    "discarded": "破棄（配信せず）",
    "answered": "照会として送信",
    "returned": "応答として返却",
    "stored": "保存のみ（配信先なし）",
}
EVENTS_JA = {
    "replayed": "再送",
    "redelivered": "配信不能の再送",
    "discarded": "配信不能の破棄",
    "unmasked": "マスク解除して閲覧",
}
KIND_OF_ROW = ("受信", "提供", "操作")


def pseudonym_key(settings: Settings) -> bytes:
    """A key of its own for the pseudonyms, derived from the hub's secrets key: the same on
    every hub process of a deployment, and not the key that seals the SOAP secrets."""
    from bus.security.secret_box import load_key

    return hmac.new(load_key(settings), _PSEUDONYM_LABEL, hashlib.sha256).digest()


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


def rows(found: ResidentTrail, with_wareki: bool) -> Iterator[list[str]]:
    """The CSV's rows in time order: each message received, each place it went, each
    operator action."""
    events: list[tuple[datetime, int, list[str]]] = []
    by_id = {m.message_id: m for m in found.messages}

    def about(message_id: str) -> list[str]:
        m = by_id[message_id]
        kind = KINDS_JA.get(m.kind, m.kind)
        return [message_id, m.service, kind, RELATIONS_JA[m.relation], m.subject or "", m.system]

    for m in found.messages:
        status = STATES_JA.get(m.status.value, m.status.value)
        events.append((m.received_at, 0, [*about(m.message_id), "", status, "", ""]))
    for p in found.provisions:
        state = STATES_JA.get(p.state, p.state)
        cells = [*about(p.message_id), p.destination, state, str(p.attempts), ""]
        events.append((p.finished_at or p.created_at, 1, cells))
    for a in found.actions:
        event = EVENTS_JA.get(a.event, a.event)
        cells = [*about(a.message_id), " ".join(a.destinations), event, "", a.actor or ""]
        events.append((a.at, 2, cells))
    for at, kind, cells in sorted(events, key=lambda e: (e[0], e[1])):
        local = at.astimezone(wareki.JST)
        first = [local.strftime("%Y-%m-%d %H:%M:%S"), KIND_OF_ROW[kind]]
        if with_wareki:
            first.insert(1, _wareki_day(local))
        yield first + cells


def header(with_wareki: bool) -> list[str]:
    names = list(COLUMNS)
    if with_wareki:
        names.insert(1, "和暦")
    return names


def _wareki_day(local: datetime) -> str:
    written = wareki.from_gregorian(local.date())
    return wareki.format_wareki(written) if written else ""


def _write_csv(path: Path, found: ResidentTrail, with_wareki: bool) -> None:
    from bus.imports.outputs import write_csv  # staff's CSV: UTF-8 BOM, CRLF, no formulas

    write_csv(path, header(with_wareki), rows(found, with_wareki), "utf-8")


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
