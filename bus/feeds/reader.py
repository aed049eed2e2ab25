"""Reading a feed: the entitled messages of one (tenant, service) stream after a cursor.

Order is the Message Store's primary-key order. A reader must never skip a message that
commits later with a smaller key, so every read stops at a *horizon* below which no
transaction is still writing: on SQLite one writer at a time commits keys in order (the
largest committed key is the horizon); on PostgreSQL concurrent ingests may commit out of key
order, so the horizon is read under a brief ``SHARE`` lock on ``messages``, which waits for
the ingests in flight and holds new ones back only for that one look-up.

Each message passes the same outbound hook as a pushed delivery (the destination's mapping,
:func:`bus.mapping.stage.outbound_body`), so per-destination translation and any filter added
there apply to feeds too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from lxml import etree
from sqlalchemy import Row as SqlRow
from sqlalchemy import Select, exists, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bus.errors import make_finding
from bus.feeds.cursor import Cursor
from bus.feeds.entitlement import Entitlement, FeedRefused
from bus.mapping.stage import OutboundTranslationError, outbound_body
from bus.pipeline import Finding
from bus.routing import conditions_hold, service_element_of
from bus.store.audit import utc
from bus.store.models import FeedMark, MessageKind, StoredMessage

MAX_LIMIT = 1000
SCAN_FACTOR = 20  # rows looked at per entry asked for, when conditions filter
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class FeedGone(LookupError):
    """Messages after the cursor were purged by retention (RK-FED003, HTTP 410)."""

    def __init__(self, cursor: Cursor) -> None:
        super().__init__(cursor.encode())
        self.finding = make_finding("RK-FED003", path="/")


@dataclass(frozen=True, slots=True)
class FeedEntry:
    position: int
    message_id: str
    received_at: datetime
    relates_to: str | None
    body: bytes | None  # as the destination takes it; None when it cannot be translated
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedPage:
    entries: list[FeedEntry]
    next_cursor: Cursor
    more: bool


Translate = Callable[[Entitlement, bytes], bytes]


def destination_body(entitled: Entitlement, body: bytes) -> bytes:
    return outbound_body(entitled.system, entitled.service, body)


def horizon(session: Session) -> int:
    """The largest primary key below which every message is committed (see module doc)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = '10s'"))
        session.execute(text("LOCK TABLE messages IN SHARE MODE"))
    return int(session.scalar(select(func.coalesce(func.max(StoredMessage.id), 0))) or 0)


def _stable_horizon(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        return horizon(session)


def purged_through(session: Session, tenant: str, service: str) -> int:
    mark = session.get(FeedMark, (tenant, service))
    return int(mark.purged_through) if mark is not None else 0


def _stream(
    tenant: str, service: str, after: int, upto: int, limit: int
) -> Select[int, str, datetime, str | None, bytes, str]:
    return (
        select(
            StoredMessage.id,
            StoredMessage.message_id,
            StoredMessage.received_at,
            StoredMessage.relates_to,
            StoredMessage.body,
            StoredMessage.system,
        )
        .where(
            StoredMessage.tenant == tenant,
            StoredMessage.service == service,
            StoredMessage.kind == MessageKind.NOTIFICATION.value,
            StoredMessage.id > after,
            StoredMessage.id <= upto,
        )
        .order_by(StoredMessage.id)
        .limit(limit)
    )


#: How far a chain of 取消/訂正 (a 取消 of a 訂正 of …) is followed back to its original.
RELATES_DEPTH = 8


@dataclass(slots=True)
class _Filter:
    """A subscriber's ``when`` conditions on each message; a 取消/訂正 (relatesTo) of a
    message the system was entitled to is its too, as the Route stage sends it along: the
    earlier message is the same sending system's (the Route stage's key, docs/dispatch.md),
    and a chain is followed back to its original."""

    entitled: Entitlement
    session: Session

    def holds(self, body: bytes, relates_to: str | None, system: str) -> bool:
        if self.entitled.unconditional or self._holds(body):
            return True
        for _ in range(RELATES_DEPTH):
            if relates_to is None:
                return False
            earlier = self.session.execute(
                select(StoredMessage.body, StoredMessage.relates_to).where(
                    StoredMessage.tenant == self.entitled.tenant,
                    StoredMessage.system == system,
                    StoredMessage.message_id == relates_to,
                    StoredMessage.kind == MessageKind.NOTIFICATION.value,
                )
            ).first()
            if earlier is None:
                return False
            if self._holds(earlier[0]):
                return True
            relates_to = earlier[1]
        return False

    def _holds(self, body: bytes) -> bool:
        element = service_element_of(etree.fromstring(body, _PARSER))
        return element is not None and any(
            conditions_hold(alternative, element) for alternative in self.entitled.conditions
        )


def _entry(
    entitled: Entitlement,
    row: SqlRow[int, str, datetime, str | None, bytes, str],
    translate: Translate,
) -> FeedEntry:
    pk, message_id, received_at, relates_to, body, _ = row
    try:
        translated: bytes | None = translate(entitled, body)
        findings: tuple[Finding, ...] = ()
    except OutboundTranslationError as error:
        translated, findings = None, tuple(error.findings)
    return FeedEntry(int(pk), message_id, utc(received_at), relates_to, translated, findings)


def _check_cursor(session: Session, cursor: Cursor) -> None:
    """RK-FED003 (410) when retention purged messages after the cursor; RK-FED001 when the
    cursor lies beyond every key this store has issued (kept from before a database restore,
    or from another hub): reading from it would silently skip every message up to it. Keys
    leave the store only by retention, which records them (``feed_marks``), so the largest
    key issued is the larger of the largest stored and the largest purged."""
    if not cursor.position:
        return
    if purged_through(session, cursor.tenant, cursor.service) > cursor.position:
        raise FeedGone(cursor)
    issued = max(
        int(session.scalar(select(func.coalesce(func.max(StoredMessage.id), 0))) or 0),
        int(session.scalar(select(func.coalesce(func.max(FeedMark.purged_through), 0))) or 0),
    )
    if cursor.position > issued:
        expected = f"{cursor.service} ({cursor.tenant})"
        raise FeedRefused(make_finding("RK-FED001", path="/", expected=expected))


def read_feed(
    sessions: sessionmaker[Session],
    entitled: Entitlement,
    cursor: Cursor,
    limit: int,
    translate: Translate = destination_body,
) -> FeedPage:
    """Up to ``limit`` entries after ``cursor`` and the cursor to continue from; reading
    again from the same cursor returns the same entries (until retention purges them)."""
    limit = max(1, min(limit, MAX_LIMIT))
    upto = _stable_horizon(sessions)
    entries: list[FeedEntry] = []
    position, budget = cursor.position, limit * SCAN_FACTOR
    with sessions() as session:
        _check_cursor(session, cursor)
        keep = _Filter(entitled, session)
        exhausted = False
        while len(entries) < limit and budget > 0 and not exhausted:
            rows = session.execute(
                _stream(cursor.tenant, cursor.service, position, upto, limit)
            ).all()
            exhausted = len(rows) < limit
            for row in rows:
                budget -= 1
                position = int(row[0])
                if keep.holds(row[4], row[3], row[5]):
                    entries.append(_entry(entitled, row, translate))
                if len(entries) == limit:
                    break
        more = bool(
            session.scalar(
                select(
                    exists().where(
                        StoredMessage.tenant == cursor.tenant,
                        StoredMessage.service == cursor.service,
                        StoredMessage.id > position,
                        StoredMessage.id <= upto,
                    )
                )
            )
        )
    if not more:
        position = max(position, upto)  # nothing of this stream up to the horizon is left
    return FeedPage(entries, Cursor(cursor.tenant, cursor.service, position), more)


def export_feed(
    sessions: sessionmaker[Session],
    entitled: Entitlement,
    page_size: int = 500,
    translate: Translate = destination_body,
) -> tuple[Cursor, Iterator[FeedEntry]]:
    """全件: every retained entry of the stream up to now, read page by page (each page its
    own short read), and the cursor a 差分 reader continues from afterwards."""
    upto = _stable_horizon(sessions)
    final = Cursor(entitled.tenant, entitled.service, upto)

    def entries() -> Iterator[FeedEntry]:
        position = 0
        while position < upto:
            with sessions() as session:
                keep = _Filter(entitled, session)
                rows = session.execute(
                    _stream(entitled.tenant, entitled.service, position, upto, page_size)
                ).all()
                chosen = [
                    _entry(entitled, row, translate)
                    for row in rows
                    if keep.holds(row[4], row[3], row[5])
                ]
            yield from chosen
            if len(rows) < page_size:
                return
            position = int(rows[-1][0])

    return final, entries()
