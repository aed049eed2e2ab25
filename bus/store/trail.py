"""One resident's trail in the Message Store (開示請求・提供記録): every stored message about a
宛名番号 of one tenant, where each went, and what operators did with it.

Found without reading a body: a message is the resident's when its Header subject is the
宛名番号 (``messages.subject``) or one of its deliveries is ordered on it
(``deliveries.subject_key``: a 取消 without a subject of its own is ordered on its
original's). One step further: a 訂正/取消 of such a message (``relatesTo`` one of them, a
訂正 X → Y concerns X too), the message such a one corrects (Y's trail names X's original),
and the reply to an inquiry about the resident (``correlationId``). A message that names the
resident only in its body (a batch import's record matched to them, a 宛名照会 by name) is
not found: docs/data-protection.md, 開示請求・提供記録への対応.

The lookup is recorded on the admin chain (``message.trail``) in the same transaction, with
the 宛名番号 masked and as a keyed pseudonym (:func:`bus.masking.hmac_pseudonym`), never in
clear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bus.errors import make_finding
from bus.masking import hmac_pseudonym
from bus.rules.check_digits import lg_code_valid
from bus.security.operators import Operator, Permission, refused
from bus.store.admin_audit import record_admin_action
from bus.store.audit import utc
from bus.store.models import AuditRecord, Delivery, MessageKind, StoredMessage
from bus.store.queries import MessageStatus, StoreQueryError, masked_subject, message_status

TRAIL_ACTION = "message.trail"
SEARCH_ACTION = "message.search"  # a message search by 宛名番号 (the console's)
#: what operators do to a message (the tenant chains' records of it)
OPERATOR_EVENTS = ("replayed", "redelivered", "discarded", "unmasked")
_TENANT = re.compile(r"[0-9]{6}")
_RESIDENT = re.compile(r"[0-9]{1,64}")  # a 宛名番号: digits, at most the subject column's width

#: Relation of a message to the resident (the trail's 関係 column)
SUBJECT, CORRECTS_THEIRS, CORRECTED_BY_THEIRS, REPLY = (
    "subject",
    "corrects",
    "corrected",
    "reply",
)

# The tenant's destinations, one index seek each (a loose index scan of the unique key
# (tenant, destination, subject_key, sequence)): never a scan of the deliveries.
_DESTINATIONS = text(
    """
    WITH RECURSIVE d(destination) AS (
        SELECT (SELECT destination FROM deliveries WHERE tenant = :tenant
                ORDER BY destination LIMIT 1)
        UNION ALL
        SELECT (SELECT destination FROM deliveries
                WHERE tenant = :tenant AND destination > d.destination
                ORDER BY destination LIMIT 1)
        FROM d WHERE d.destination IS NOT NULL
    )
    SELECT destination FROM d WHERE destination IS NOT NULL
    """
)

StoredRow = Any  # a row of _MESSAGE_COLUMNS (SQLAlchemy types each column of it)
_MESSAGE_COLUMNS = (
    StoredMessage.id,
    StoredMessage.message_id,
    StoredMessage.system,
    StoredMessage.service,
    StoredMessage.kind,
    StoredMessage.subject,
    StoredMessage.correlation_id,
    StoredMessage.relates_to,
    StoredMessage.received_at,
)


@dataclass(frozen=True, slots=True)
class TrailMessage:
    pk: int
    message_id: str
    system: str  # the sending system
    service: str
    kind: str
    subject: str | None  # masked
    relation: str  # SUBJECT, CORRECTS_THEIRS, CORRECTED_BY_THEIRS or REPLY
    received_at: datetime
    status: MessageStatus
    correlation_id: str | None
    relates_to: str | None


@dataclass(frozen=True, slots=True)
class Provision:
    """Where a message's content went: a delivery, or (request-reply, no delivery row) the
    inquiry to the provider that answered it and the reply to the inquiring system."""

    message_id: str
    destination: str
    via: str  # "delivery", "inquiry" or "reply"
    state: str  # a DeliveryState, or "answered"/"returned" for request-reply
    attempts: int
    created_at: datetime
    finished_at: datetime | None  # delivered or discarded (None: pending or dead)


@dataclass(frozen=True, slots=True)
class OperatorAction:
    message_id: str
    event: str  # OPERATOR_EVENTS
    actor: str | None
    at: datetime
    destinations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResidentTrail:
    tenant: str
    resident: str  # masked
    since: datetime | None
    messages: list[TrailMessage] = field(default_factory=list)
    provisions: list[Provision] = field(default_factory=list)
    actions: list[OperatorAction] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        def rows(items: Iterable[Any]) -> list[dict[str, Any]]:
            return [{k: plain(getattr(i, k)) for k in i.__slots__} for i in items]

        return {
            "tenant": self.tenant,
            "resident": self.resident,
            "since": plain(self.since),
            "messages": [m | {"status": str(m["status"])} for m in rows(self.messages)],
            "provisions": rows(self.provisions),
            "actions": [a | {"destinations": list(a["destinations"])} for a in rows(self.actions)],
        }


def check_lookup(tenant: str, resident: str) -> None:
    """RK-STO010 (the 宛名番号, masked) or RK-TEN001 (the tenant) for a malformed request."""
    if not (_TENANT.fullmatch(tenant) and lg_code_valid(tenant)):
        raise StoreQueryError(make_finding("RK-TEN001", path="--tenant", actual=tenant[:40]))
    if not _RESIDENT.fullmatch(resident):
        shown = masked_subject(resident[:64]) or ""
        raise StoreQueryError(make_finding("RK-STO010", path="--resident", actual=shown))


def resident_trail(
    session: Session,
    *,
    tenant: str,
    resident: str,
    actor: str,
    pseudonym_key: bytes,
    since: datetime | None = None,
    operator: Operator | None = None,
) -> ResidentTrail:
    """The resident's trail, and its ``message.trail`` record on the admin chain, in the
    caller's transaction. ``operator``: refused (RK-AUT011) unless they may view ``tenant``.
    ``since``: only what happened at or after it (a message received before it stays when one
    of its deliveries or operator actions falls after it, or a delivery is still unresolved)."""
    check_lookup(tenant, resident)
    if operator is not None and not operator.may(Permission.VIEW, tenant):
        raise StoreQueryError(refused(operator, Permission.VIEW, tenant))
    found = _found_messages(session, tenant, resident)
    deliveries = _deliveries(session, list(found))
    trail = _assemble(session, tenant, resident, found, deliveries, since)
    record_admin_action(
        session,
        actor,
        TRAIL_ACTION,
        {
            "tenant": tenant,
            "resident": trail.resident,
            "resident_key": resident_key(tenant, resident, pseudonym_key),
            "since": since.isoformat() if since else None,
            "messages": len(trail.messages),
            "provisions": len(trail.provisions),
        },
    )
    return trail


def record_subject_search(
    session: Session,
    actor: str,
    subject: str,
    tenants: Sequence[str],
    found: int,
    pseudonym_key: bytes,
) -> None:
    """Record a message search by 宛名番号 (``message.search``) on the admin chain, in the
    caller's transaction: it looks up one resident as a trail does, whoever may search (a
    viewer too). The number masked and, per town searched, as the key a trail of the same
    resident is recorded under, so "who looked this resident up" finds both; ``found``: the
    messages on the page shown (each further page is a look-up too)."""
    record_admin_action(
        session,
        actor,
        SEARCH_ACTION,
        {
            "subject": masked_subject(subject[:64]),
            "resident_keys": {
                tenant: resident_key(tenant, subject, pseudonym_key) for tenant in tenants
            },
            "found": found,
        },
    )


def resident_key(tenant: str, resident: str, pseudonym_key: bytes) -> str:
    """The ``resident_key`` a trail lookup of this resident was recorded under."""
    return hmac_pseudonym(f"{tenant}:{resident}", pseudonym_key)


def _found_messages(
    session: Session, tenant: str, resident: str
) -> dict[int, tuple[StoredRow, str]]:
    """The resident's messages (pk → row, relation), one step of relations included."""
    found: dict[int, tuple[StoredRow, str]] = {}
    keyed = _keyed_message_pks(session, tenant, resident)
    own = select(*_MESSAGE_COLUMNS).where(StoredMessage.tenant == tenant)
    by_subject = own.where(StoredMessage.subject == resident)  # two statements: each by index
    for query in (by_subject, *(own.where(StoredMessage.id.in_(c)) for c in _chunks(keyed))):
        for row in session.execute(query):
            found[row.id] = (row, SUBJECT)
    if not found:
        return found
    ids = sorted({row.message_id for row, _ in found.values()})
    # a 訂正/取消 is stored after what it corrects: the receipt index bounds the search
    earliest = min(row.received_at for row, _ in found.values())
    for chunk in _chunks(ids):
        corrections = own.where(
            StoredMessage.received_at >= earliest, StoredMessage.relates_to.in_(chunk)
        )
        for row in session.execute(corrections):
            found.setdefault(row.id, (row, CORRECTED_BY_THEIRS))
        replies = own.where(
            StoredMessage.correlation_id.in_(chunk),
            StoredMessage.kind == MessageKind.REPLY.value,
        )
        for row in session.execute(replies):
            found.setdefault(row.id, (row, REPLY))
    originals = sorted({row.relates_to for row, rel in found.values() if rel == SUBJECT} - {None})
    for chunk in _chunks(originals):
        for row in session.execute(own.where(StoredMessage.message_id.in_(chunk))):
            found.setdefault(row.id, (row, CORRECTS_THEIRS))
    return found


def _keyed_message_pks(session: Session, tenant: str, resident: str) -> list[int]:
    """Messages with a delivery ordered on the 宛名番号, by the deliveries' unique key."""
    destinations = list(session.scalars(_DESTINATIONS, {"tenant": tenant}))
    if not destinations:
        return []
    return sorted(
        set(
            session.scalars(
                select(Delivery.message_pk).where(
                    Delivery.tenant == tenant,
                    Delivery.destination.in_(destinations),
                    Delivery.subject_key == resident,
                )
            )
        )
    )


def _chunks(values: list[Any], size: int = 256) -> Iterable[list[Any]]:
    """Key look-ups 256 a statement (SQLite refuses deeper expressions)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _deliveries(session: Session, pks: list[int]) -> dict[int, list[Delivery]]:
    by_message: dict[int, list[Delivery]] = {pk: [] for pk in pks}
    for chunk in _chunks(pks):
        query = select(Delivery).where(Delivery.message_pk.in_(chunk)).order_by(Delivery.id)
        for delivery in session.scalars(query):
            by_message[delivery.message_pk].append(delivery)
    return by_message


def _assemble(
    session: Session,
    tenant: str,
    resident: str,
    found: dict[int, tuple[StoredRow, str]],
    deliveries: dict[int, list[Delivery]],
    since: datetime | None,
) -> ResidentTrail:
    start = utc(since) if since else None

    def after(*moments: datetime | None) -> bool:
        return start is None or any(m is not None and utc(m) >= start for m in moments)

    by_id = {row.message_id: row for row, _ in found.values()}
    askers = _askers(session, tenant, found)
    provisions = [
        p
        for pk, (row, _) in found.items()
        for p in _provisions(row, deliveries[pk], by_id, askers)
        if after(p.created_at, p.finished_at) or p.state in ("pending", "dead")
    ]
    actions = [a for a in _actions(session, tenant, sorted(by_id)) if after(a.at)]
    touched = {p.message_id for p in provisions} | {a.message_id for a in actions}
    messages = [
        _message(row, relation, [d.state for d in deliveries[pk]])
        for pk, (row, relation) in found.items()
        if after(row.received_at) or row.message_id in touched
    ]
    kept = {m.message_id for m in messages}
    return ResidentTrail(
        tenant=tenant,
        resident=masked_subject(resident) or "",
        since=start,
        messages=sorted(messages, key=lambda m: (m.received_at, m.pk)),
        provisions=sorted(
            (p for p in provisions if p.message_id in kept),
            key=lambda p: (p.finished_at or p.created_at, p.message_id, p.destination),
        ),
        actions=sorted((a for a in actions if a.message_id in kept), key=lambda a: a.at),
    )


def _message(row: StoredRow, relation: str, states: list[str]) -> TrailMessage:
    return TrailMessage(
        pk=row.id,
        message_id=row.message_id,
        system=row.system,
        service=row.service,
        kind=row.kind,
        subject=masked_subject(row.subject),
        relation=relation,
        received_at=utc(row.received_at),
        status=message_status(set(states)),
        correlation_id=row.correlation_id,
        relates_to=row.relates_to,
    )


def _askers(
    session: Session, tenant: str, found: dict[int, tuple[StoredRow, str]]
) -> dict[str, str]:
    """The system that sent each inquiry a reply in the trail answers (inquiry id → system),
    by the messageId index: the inquiry itself need not be about the resident."""
    asked = sorted(
        {row.correlation_id for row, _ in found.values() if row.kind == MessageKind.REPLY.value}
        - {None}
    )
    systems: dict[str, str] = {}
    for chunk in _chunks(asked):
        inquiries = select(StoredMessage.message_id, StoredMessage.system).where(
            StoredMessage.message_id.in_(chunk),
            StoredMessage.tenant == tenant,
            StoredMessage.kind == MessageKind.INQUIRY.value,
        )
        systems.update({row.message_id: row.system for row in session.execute(inquiries)})
    return systems


def _provisions(
    row: StoredRow,
    deliveries: list[Delivery],
    by_id: dict[str, StoredRow],
    askers: dict[str, str],
) -> list[Provision]:
    """The message's deliveries; for request-reply (no delivery rows), the inquiry to the
    system whose reply is in the trail and the reply to the system that asked."""
    if row.kind == MessageKind.REPLY.value:
        asker = askers.get(row.correlation_id)
        return [_answer(row, asker, "reply", "returned")] if asker else []
    if row.kind == MessageKind.INQUIRY.value:
        answers = [r for r in by_id.values() if r.correlation_id == row.message_id]
        return [_answer(row, r.system, "inquiry", "answered") for r in answers]
    return [
        Provision(
            message_id=row.message_id,
            destination=d.destination,
            via="delivery",
            state=d.state,
            attempts=d.attempts,
            created_at=utc(d.created_at),
            finished_at=utc(d.finished_at) if d.finished_at else None,
        )
        for d in deliveries
    ]


def _answer(row: StoredRow, destination: str, via: str, state: str) -> Provision:
    moment = utc(row.received_at)
    return Provision(row.message_id, destination, via, state, 1, moment, moment)


def _actions(session: Session, tenant: str, message_ids: list[str]) -> list[OperatorAction]:
    """Operators' replays, redeliveries, discards and unmaskings of the messages (the
    tenant chain's records, found by their messageId index)."""
    actions: list[OperatorAction] = []
    for chunk in _chunks(message_ids):
        # by the messageId index alone: with the tenant in the WHERE, SQLite walks the
        # tenant's whole chain by its (tenant, seq) key instead
        query = select(AuditRecord).where(
            AuditRecord.message_id.in_(chunk), AuditRecord.event.in_(OPERATOR_EVENTS)
        )
        for record in session.scalars(query):
            if record.tenant != tenant:  # another town's message with the same id
                continue
            detail = record.detail or {}
            named = detail.get("destinations") or [detail.get("destination")]
            actions.append(
                OperatorAction(
                    message_id=str(record.message_id),
                    event=record.event,
                    actor=record.actor,
                    at=utc(record.at),
                    destinations=tuple(str(d) for d in named if d),
                )
            )
    return actions
