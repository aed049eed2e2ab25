"""One resident's trail as staff read it (開示請求・提供記録): the Japanese columns and labels,
one row per event in time order, the CSV (UTF-8 with BOM, CRLF, no formulas), and the key of
the lookups' ``resident_key`` pseudonyms. ``renkei messages trail`` and the console's 開示請求
page both use these, so that their CSVs are the same bytes (docs/data-protection.md)."""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Iterator
from datetime import datetime

from bus import wareki
from bus.settings import Settings
from bus.store.trail import ResidentTrail

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


def timeline(found: ResidentTrail) -> list[tuple[datetime, str, list[str]]]:
    """Each event in time order: each message received, each place it went, each operator
    action; as (its moment, its 区分, the cells after 区分 in :data:`COLUMNS`)."""
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
    ordered = sorted(events, key=lambda e: (e[0], e[1]))
    return [(at, KIND_OF_ROW[kind], cells) for at, kind, cells in ordered]


def rows(found: ResidentTrail, with_wareki: bool) -> Iterator[list[str]]:
    """The CSV's rows: :func:`timeline` with its moments as JST (and 和暦) text."""
    for at, kind, cells in timeline(found):
        local = at.astimezone(wareki.JST)
        first = [local.strftime("%Y-%m-%d %H:%M:%S"), kind]
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


def trail_csv(found: ResidentTrail, with_wareki: bool) -> bytes:
    """The CSV for staff: UTF-8 with a BOM, CRLF, a value Excel would run as a formula kept
    as text (the 評価変更リスト's writer, bus/imports/outputs.py)."""
    from bus.imports.outputs import ENCODINGS, CsvOut

    text = io.StringIO(newline="")
    out = CsvOut(text, header(with_wareki), "utf-8")
    for row in rows(found, with_wareki):
        out.row(row)
    return text.getvalue().encode(ENCODINGS["utf-8"], errors="renkei-geta")
