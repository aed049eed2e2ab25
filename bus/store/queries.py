"""Reading the Message Store for operators: list, show (personal data masked) and replay.

A message's status is derived from its deliveries: ``dead`` if any is dead-lettered, else
``pending`` if any waits, else ``discarded`` if an operator discarded one, else ``delivered``;
a message without deliveries (an inquiry, a reply, no subscriber) is ``stored``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from lxml import etree
from sqlalchemy import ColumnElement, Select, and_, exists, not_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bus.catalogue import NS_ENVELOPE, Catalogue, load_catalogue
from bus.config.models import Direction
from bus.errors import make_finding
from bus.masking import mask
from bus.pipeline import Finding
from bus.store.audit import append_audit, utc
from bus.store.clock import database_now
from bus.store.models import (
    AuditRecord,
    Delivery,
    DeliveryState,
    DestinationState,
    MessageKind,
    StoredMessage,
)
from bus.store.sequences import next_sequence

DEFAULT_LIMIT = 50
# Attributes of a personal element that are not themselves personal (ResidentDate's flag).
_PLAIN_ATTRIBUTES = frozenset({"asGiven"})
# The Header's ordering key is usually a 宛名番号: shown masked like the item it copies.
_SUBJECT_TAG = f"{{{NS_ENVELOPE}}}subject"


class MessageStatus(StrEnum):
    STORED = "stored"
    PENDING = "pending"
    DEAD = "dead"
    DISCARDED = "discarded"
    DELIVERED = "delivered"


class StoreQueryError(LookupError):
    """A query the store cannot answer, carrying the coded finding to show the caller."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


def masked_subject(subject: str | None) -> str | None:
    return mask(subject, personal=True) if subject else subject


def message_status(states: set[str]) -> MessageStatus:
    for state, status in (
        (DeliveryState.DEAD, MessageStatus.DEAD),
        (DeliveryState.PENDING, MessageStatus.PENDING),
        (DeliveryState.DISCARDED, MessageStatus.DISCARDED),
        (DeliveryState.DELIVERED, MessageStatus.DELIVERED),
    ):
        if state.value in states:
            return status
    return MessageStatus.STORED


def _has(*states: DeliveryState) -> ColumnElement[bool]:
    return exists().where(
        Delivery.message_pk == StoredMessage.id, Delivery.state.in_([s.value for s in states])
    )


def _status_clause(status: MessageStatus) -> ColumnElement[bool]:
    """SQL for :func:`message_status`, so the filter runs in the database."""
    dead, pending = DeliveryState.DEAD, DeliveryState.PENDING
    discarded, delivered = DeliveryState.DISCARDED, DeliveryState.DELIVERED
    clauses: dict[MessageStatus, ColumnElement[bool]] = {
        MessageStatus.DEAD: _has(dead),
        MessageStatus.PENDING: and_(_has(pending), not_(_has(dead))),
        MessageStatus.DISCARDED: and_(_has(discarded), not_(_has(dead, pending))),
        MessageStatus.DELIVERED: and_(_has(delivered), not_(_has(dead, pending, discarded))),
        MessageStatus.STORED: not_(exists().where(Delivery.message_pk == StoredMessage.id)),
    }
    return clauses[status]


@dataclass(frozen=True, slots=True)
class MessageSummary:
    message_id: str
    tenant: str
    system: str
    service: str
    kind: str
    subject: str | None  # masked
    received_at: datetime
    expires_at: datetime | None
    status: MessageStatus
    deliveries: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["received_at"] = self.received_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        data["status"] = self.status.value
        return data


def _summary(row: StoredMessage, states: list[str]) -> MessageSummary:
    return MessageSummary(
        message_id=row.message_id,
        tenant=row.tenant,
        system=row.system,
        service=row.service,
        kind=row.kind,
        subject=masked_subject(row.subject),
        received_at=utc(row.received_at),
        expires_at=utc(row.expires_at) if row.expires_at else None,
        status=message_status(set(states)),
        deliveries=len(states),
    )


def list_messages(
    session: Session,
    *,
    tenant: str | None = None,
    service: str | None = None,
    status: MessageStatus | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    tenants: Collection[str] | None = None,
    message_id: str | None = None,
    subject: str | None = None,
    until: datetime | None = None,
) -> list[MessageSummary]:
    """The newest messages first, filtered. ``tenants``: only these (the tenants an operator
    may see); ``since`` inclusive, ``until`` exclusive."""
    query = _messages_query(
        tenant, service, status, since, tenants, message_id, subject, until, after=None
    )
    return _summaries(session, list(session.scalars(query.limit(limit))))


MessageKey = tuple[datetime, int]  # a message's place in the order: received_at, its row key


def page_messages(
    session: Session,
    *,
    after: MessageKey | None,
    limit: int,
    tenant: str | None = None,
    service: str | None = None,
    status: MessageStatus | None = None,
    since: datetime | None = None,
    tenants: Collection[str] | None = None,
    message_id: str | None = None,
    subject: str | None = None,
    until: datetime | None = None,
) -> tuple[list[MessageSummary], MessageKey | None]:
    """:func:`list_messages` a page at a time: the messages after ``after`` in its order
    (keyset pagination: a page deep in a large store costs what the first does, and messages
    arriving meanwhile shift nothing), and the key to ask the next page after (None: the
    last page)."""
    query = _messages_query(
        tenant, service, status, since, tenants, message_id, subject, until, after=after
    )
    rows = list(session.scalars(query.limit(limit + 1)))
    more, rows = len(rows) > limit, rows[:limit]
    last = (utc(rows[-1].received_at), rows[-1].id) if more else None
    return _summaries(session, rows), last


def _messages_query(
    tenant: str | None,
    service: str | None,
    status: MessageStatus | None,
    since: datetime | None,
    tenants: Collection[str] | None,
    message_id: str | None,
    subject: str | None,
    until: datetime | None,
    *,
    after: MessageKey | None,
) -> Select[StoredMessage]:
    received = StoredMessage.received_at
    query = select(StoredMessage).order_by(received.desc(), StoredMessage.id)
    if tenants is not None:
        query = query.where(StoredMessage.tenant.in_(sorted(tenants)))
    if tenant:
        query = query.where(StoredMessage.tenant == tenant)
    if message_id:
        query = query.where(StoredMessage.message_id == message_id)
    if subject:
        query = query.where(StoredMessage.subject == subject)
    if until:
        query = query.where(received < utc(until))
    if service:
        query = query.where(StoredMessage.service == service)
    if status:
        query = query.where(_status_clause(status))
    if since:
        query = query.where(received >= utc(since))
    if after:
        at, pk = utc(after[0]), after[1]
        query = query.where(or_(received < at, and_(received == at, StoredMessage.id > pk)))
    return query


def _summaries(session: Session, rows: list[StoredMessage]) -> list[MessageSummary]:
    states: dict[int, list[str]] = {row.id: [] for row in rows}
    if rows:
        for pk, state in session.execute(
            select(Delivery.message_pk, Delivery.state).where(Delivery.message_pk.in_(states))
        ):
            states[pk].append(state)
    return [_summary(row, states[row.id]) for row in rows]


def find_message(
    session: Session,
    message_id: str,
    tenant: str | None = None,
    parties: Collection[str] | None = None,
) -> StoredMessage:
    """The one stored message with this id (and tenant); a coded error otherwise.
    ``parties``: only a message one of these systems sent or receives counts, so a caller
    learns nothing of others' messages — not even that another tenant has one with this id
    (several others' would otherwise make RK-STO003, an existence oracle)."""
    if "\x00" in message_id or "\x00" in (tenant or ""):  # no stored id holds one, and
        shown = message_id.replace("\x00", "\\x00")  # PostgreSQL refuses to compare with it
        raise StoreQueryError(make_finding("RK-STO002", path="/", actual=shown))
    query = select(StoredMessage).where(StoredMessage.message_id == message_id)
    if tenant:
        query = query.where(StoredMessage.tenant == tenant)
    if parties is not None:
        receives = select(Delivery.id).where(
            Delivery.message_pk == StoredMessage.id, Delivery.destination.in_(parties)
        )
        query = query.where(or_(StoredMessage.system.in_(parties), receives.exists()))
    rows = list(session.scalars(query.limit(2)))
    if not rows:
        raise StoreQueryError(make_finding("RK-STO002", path="/", actual=message_id))
    if len(rows) > 1:
        raise StoreQueryError(make_finding("RK-STO003", path="/", actual=message_id))
    return rows[0]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    destination: str
    subject: str | None  # masked
    sequence: int
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    # why a pending delivery is not sent yet: "paused" (its destination), or "#<id> <state>"
    # (an earlier delivery of its subject to that destination, which it must follow, or the
    # one it waits for: a 訂正 of another subject waits for its original's delivery)
    waiting_for: str | None = None


@dataclass(frozen=True, slots=True)
class AuditView:
    seq: int
    at: datetime
    event: str
    actor: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageDetail:
    summary: MessageSummary
    correlation_id: str | None
    relates_to: str | None
    digest: str
    deliveries: list[DeliveryView]
    audit: list[AuditView]
    body: str  # pretty-printed, personal data masked

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            **self.summary.as_dict(),
            "correlation_id": self.correlation_id,
            "relates_to": self.relates_to,
            "digest": self.digest,
            "deliveries": [{k: plain(v) for k, v in asdict(d).items()} for d in self.deliveries],
            "audit": [{k: plain(v) for k, v in asdict(a).items()} for a in self.audit],
            "body": self.body,
        }


_SAFE_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
)


def masked_body(body: bytes, catalogue: Catalogue | None = None) -> str:
    """The stored PlatformMessage, indented, with the text (and ``alt``/``iso`` attributes) of
    every personal item masked, and the Header subject too."""
    by_tag = (catalogue or load_catalogue()).by_tag
    root = etree.fromstring(body, _SAFE_PARSER)
    for element in root.iter(tag=etree.Element):
        item = by_tag.get(element.tag)
        if not ((item is not None and item.personal) or element.tag == _SUBJECT_TAG):
            continue
        if element.text:
            element.text = mask(element.text, personal=True)
        for name, value in element.attrib.items():
            if str(name) not in _PLAIN_ATTRIBUTES:
                element.set(name, mask(str(value), personal=True))
    etree.indent(root)
    return etree.tostring(root, encoding="unicode")


def show_message(
    session: Session,
    message_id: str,
    tenant: str | None = None,
    parties: Collection[str] | None = None,
) -> MessageDetail:
    row = find_message(session, message_id, tenant, parties)
    deliveries = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.message_pk == row.id)
            .order_by(Delivery.destination, Delivery.sequence)
        )
    )
    paused = set(session.scalars(select(DestinationState.system).where(DestinationState.paused)))
    audit = session.scalars(
        select(AuditRecord)
        .where(AuditRecord.tenant == row.tenant, AuditRecord.message_id == row.message_id)
        .order_by(AuditRecord.seq)
    )
    return MessageDetail(
        summary=_summary(row, [d.state for d in deliveries]),
        correlation_id=row.correlation_id,
        relates_to=row.relates_to,
        digest=row.body_digest,
        deliveries=[
            DeliveryView(
                destination=d.destination,
                subject=masked_subject(d.subject_key),
                sequence=d.sequence,
                state=d.state,
                attempts=d.attempts,
                next_attempt_at=utc(d.next_attempt_at),
                last_error=d.last_error,
                created_at=utc(d.created_at),
                finished_at=utc(d.finished_at) if d.finished_at else None,
                waiting_for=_waiting_for(session, d, paused),
            )
            for d in deliveries
        ],
        audit=[AuditView(a.seq, utc(a.at), a.event, a.actor, a.detail) for a in audit],
        body=masked_body(row.body),
    )


def _waiting_for(session: Session, delivery: Delivery, paused: set[str]) -> str | None:
    """Why a pending delivery waits, when it is not only its next attempt: its destination
    paused, or an earlier delivery of its subject not yet done — a dead letter holds every
    later one of its subject until it is redelivered or discarded — or the delivery it
    ``waits_for`` (a 訂正 of another subject: its original's there) not yet done."""
    if delivery.state != DeliveryState.PENDING.value:
        return None
    if delivery.destination in paused:
        return "paused"
    ahead = session.execute(
        select(Delivery.id, Delivery.state)
        .where(
            Delivery.tenant == delivery.tenant,
            Delivery.destination == delivery.destination,
            Delivery.subject_key == delivery.subject_key,
            Delivery.sequence < delivery.sequence,
            Delivery.state.in_((DeliveryState.PENDING.value, DeliveryState.DEAD.value)),
        )
        .order_by(Delivery.sequence)
        .limit(1)
    ).first()
    if ahead is not None:
        return f"#{ahead.id} {ahead.state}"
    if delivery.waits_for is None:
        return None
    waited = session.get(Delivery, delivery.waits_for)
    if waited is None or waited.state not in (
        DeliveryState.PENDING.value,
        DeliveryState.DEAD.value,
    ):
        return None
    return f"#{waited.id} {waited.state}"


@dataclass(frozen=True, slots=True)
class ReplayReport:
    message_id: str
    tenant: str
    deliveries: tuple[tuple[str, int], ...]  # (destination, new sequence)


class Receiving(Protocol):
    """What :func:`replay` asks of the configuration (``ConfigIndex`` has it)."""

    def allowed(self, system: str, direction: Direction, service: str, tenant: str) -> bool: ...


def _receiving_in_force(sessions: sessionmaker[Session]) -> Receiving | None:
    """The latest stored configuration's index (one snapshot read and parse: replay is a
    rare operator action); None in a store without one."""
    from bus.config.snapshots import NoConfiguration, load_snapshot  # config imports store

    try:
        return load_snapshot(sessions).index
    except NoConfiguration:
        return None


def replay(
    sessions: sessionmaker[Session],
    message_id: str,
    *,
    reason: str,
    tenant: str | None = None,
    to: str | None = None,
    actor: str | None = None,
    now: datetime | None = None,
    receiving: Receiving | None = None,
) -> ReplayReport:
    """New pending deliveries of a stored message, at the END of each subject's order (they
    never overtake what was sent since). Audited ``replayed``; the free-text reason is kept
    only as a digest, since an operator may have typed personal data into it.

    Refused (RK-STO009, nothing added) when a destination to replay to no longer receives the
    message's service for its tenant under the configuration in force (``receiving``, else
    the latest stored version): the town left that system or its grant was narrowed since
    the message was routed. Dispatch would dead-letter such a delivery unsent anyway
    (:func:`bus.dispatch.worker.no_longer_receives`); this says so to the operator at once."""
    check = receiving if receiving is not None else _receiving_in_force(sessions)
    with sessions.begin() as session:
        # due now by the store's clock, the one the workers claim by (not this host's)
        moment = utc(now) if now is not None else database_now(session.connection())
        row = find_message(session, message_id, tenant)
        earlier: dict[str, Delivery] = {}
        for delivery in session.scalars(
            select(Delivery).where(Delivery.message_pk == row.id).order_by(Delivery.id)
        ):
            earlier.setdefault(delivery.destination, delivery)
        if not earlier:
            raise StoreQueryError(make_finding("RK-STO005", path="/", actual=message_id))
        if to is not None and to not in earlier:
            raise StoreQueryError(
                make_finding("RK-STO004", path="/", actual=to, expected=message_id)
            )
        destinations = sorted([to] if to else earlier)
        if check is not None:
            refused = [
                d
                for d in destinations
                if not check.allowed(d, Direction.RECEIVE, row.service, earlier[d].tenant)
            ]
            if refused:
                raise StoreQueryError(
                    make_finding(
                        "RK-STO009",
                        path="/",
                        actual=", ".join(refused),
                        service=row.service,
                        tenant=row.tenant,
                    )
                )
        added: list[tuple[str, int]] = []
        for destination in destinations:
            first = earlier[destination]
            sequence = next_sequence(
                session,
                tenant=first.tenant,
                destination=destination,
                subject=first.subject_key,
            )
            session.add(
                Delivery(
                    message_pk=row.id,
                    destination=destination,
                    tenant=first.tenant,
                    subject_key=first.subject_key,
                    sequence=sequence,
                    state=DeliveryState.PENDING.value,
                    attempts=0,
                    next_attempt_at=moment,
                    created_at=moment,
                )
            )
            added.append((destination, sequence))
        session.flush()
        append_audit(
            session,
            tenant=row.tenant,
            event="replayed",
            message_id=row.message_id,
            detail={
                "destinations": [d for d, _ in added],
                "sequences": [s for _, s in added],
                "reason_sha256": hashlib.sha256(reason.encode("utf-8")).hexdigest(),
            },
            actor=actor,
            at=moment,
        )
        return ReplayReport(row.message_id, row.tenant, tuple(added))


def stored_reply_body(session: Session, tenant: str, request_id: str) -> bytes | None:
    """The body of the reply stored for the inquiry ``request_id`` of ``tenant`` (its
    correlationId), or None. Only when that messageId names one inquiry in the tenant: two
    callers' inquiries under one messageId would leave it unclear whose reply it is (each
    caller's reply is limited to what that caller may see)."""
    inquiries = select(StoredMessage.id).where(
        StoredMessage.tenant == tenant,
        StoredMessage.message_id == request_id,
        StoredMessage.kind == MessageKind.INQUIRY.value,
    )
    if len(session.scalars(inquiries.limit(2)).all()) != 1:
        return None
    return session.scalar(
        select(StoredMessage.body)
        .where(
            StoredMessage.tenant == tenant,
            StoredMessage.correlation_id == request_id,
            StoredMessage.kind == MessageKind.REPLY.value,
        )
        .order_by(StoredMessage.id)
        .limit(1)
    )
