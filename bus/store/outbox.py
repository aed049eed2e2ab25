"""The Transactional Outbox's writes (DESIGN §1 stage 7): message, idempotency key,
deliveries (with per-subject sequence numbers) and audit records of accepted messages, in the
caller's transaction.

:func:`store_incomings` writes a whole group of ingests with one statement per table (a
multi-row insert each through the DBAPI cursor, :mod:`bus.store.bulk`; one sequence upsert
for all their keys; the audit records appended last so the tenants' heads stay locked only
until the commit); one key look-up reads the whole group and one more the original
acknowledgements of its duplicates (:mod:`bus.store.lookups`). :func:`store_incoming` is the
group of one. Idempotent Receiver: the key is (tenant, sending system, messageId); a key seen
before (in the store or earlier in the group) with the same content digest is a duplicate
(the original acknowledgement, nothing stored), with other content a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from lxml import etree
from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session

from bus.pipeline import Acknowledgement, Delivery, Message
from bus.store.audit import AuditEntry, append_audits_on, utc
from bus.store.bulk import BulkInsert
from bus.store.digest import document_digest
from bus.store.lookups import Key, existing_keys, original_acks
from bus.store.models import (
    Delivery as DeliveryRow,
)
from bus.store.models import (
    DeliveryState,
    IdempotencyKey,
    MessageKind,
    StoredMessage,
)
from bus.store.sequences import SequenceKey, allocate_sequences, subject_key

Retention = Callable[[str], timedelta]


class NotValidated(ValueError):
    """The Store stage was given a message the Validate stage has not filled in."""


_KEYS = cast(Table, IdempotencyKey.__table__)
_MESSAGES = cast(Table, StoredMessage.__table__)
_INSERT_MESSAGES = BulkInsert(
    _MESSAGES,
    (
        "message_id",
        "tenant",
        "system",
        "service",
        "kind",
        "subject",
        "correlation_id",
        "relates_to",
        "body",
        "body_digest",
        "received_at",
        "expires_at",
    ),
    returning=("id", "tenant", "system", "message_id"),
)
_INSERT_KEYS = BulkInsert(
    _KEYS, ("tenant", "system", "message_id", "content_digest", "message_pk", "created_at")
)
_DELIVERY_COLUMNS = (
    "message_pk",
    "destination",
    "tenant",
    "subject_key",
    "sequence",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
)
_INSERT_DELIVERIES = BulkInsert(cast(Table, DeliveryRow.__table__), _DELIVERY_COLUMNS)
# a group holding a 訂正 of another subject (bus/routing.py) writes ``waits_for`` too; the
# others keep the narrower statement (more rows per statement)
_INSERT_WAITING_DELIVERIES = BulkInsert(
    cast(Table, DeliveryRow.__table__), (*_DELIVERY_COLUMNS, "waits_for")
)


def _kind(message: Message, service: str) -> str:
    if message.kind:
        return message.kind
    if service.endswith("Reply"):
        return MessageKind.REPLY.value
    if service.endswith("Inquiry"):
        return MessageKind.INQUIRY.value
    return MessageKind.NOTIFICATION.value


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class Incoming:
    """What one accepted message writes, computed before the transaction opens (the digest
    and the retention lookup need no lock)."""

    tenant: str
    system: str
    message_id: str
    service: str
    kind: str
    subject: str | None
    correlation_id: str | None
    relates_to: str | None
    body: bytes
    digest: str
    received_at: datetime
    expires_at: datetime
    deliveries: tuple[Delivery, ...]

    @property
    def destinations(self) -> tuple[str, ...]:
        return _unique(delivery.destination for delivery in self.deliveries)

    @classmethod
    def from_message(cls, message: Message, retention: Retention) -> Incoming:
        document, envelope, service = message.document, message.envelope, message.service
        if document is None or envelope is None or service is None:
            raise NotValidated("the Store stage needs a validated message")
        received_at = utc(message.received_at)
        return cls(
            tenant=envelope.client.tenant,
            system=envelope.client.system,
            message_id=envelope.message_id,
            service=service,
            kind=_kind(message, service),
            subject=envelope.subject,
            correlation_id=envelope.correlation_id,
            relates_to=envelope.relates_to,
            body=etree.tostring(document),
            digest=document_digest(document),
            received_at=received_at,
            # Retention is configured per service name (a reply keeps its inquiry's).
            expires_at=received_at + retention(envelope.service),
            deliveries=tuple(message.deliveries),
        )


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """``ack`` is None exactly when the key was seen with other content (a conflict)."""

    ack: Acknowledgement | None
    sequences: tuple[int, ...] = ()

    @property
    def conflict(self) -> bool:
        return self.ack is None


def _message_row(incoming: Incoming) -> tuple[Any, ...]:
    return (
        incoming.message_id,
        incoming.tenant,
        incoming.system,
        incoming.service,
        incoming.kind,
        incoming.subject,
        incoming.correlation_id,
        incoming.relates_to,
        incoming.body,
        incoming.digest,
        incoming.received_at,
        incoming.expires_at,
    )


def _stored_entry(incoming: Incoming, now: datetime) -> AuditEntry:
    return AuditEntry(
        tenant=incoming.tenant,
        event="stored",
        message_id=incoming.message_id,
        detail={
            "service": incoming.service,
            "kind": incoming.kind,
            "digest": incoming.digest,
            "destinations": list(incoming.destinations),
            "system": incoming.system,
        },
        actor=incoming.system,
        at=now,
    )


def _duplicate_entry(incoming: Incoming, now: datetime) -> AuditEntry:
    return AuditEntry(
        tenant=incoming.tenant,
        event="duplicate",
        message_id=incoming.message_id,
        detail={"service": incoming.service, "digest": incoming.digest},
        actor=incoming.system,
        at=now,
    )


def _write_new(
    connection: Connection, new: Sequence[Incoming], now: datetime
) -> list[tuple[int, ...]]:
    """Messages, keys and deliveries of the new messages; their sequence numbers."""
    inserted = _INSERT_MESSAGES.execute(connection, [_message_row(i) for i in new])
    pks: dict[Key, int] = {(tenant, system, mid): pk for pk, tenant, system, mid in inserted}
    _INSERT_KEYS.execute(
        connection,
        [
            (
                i.tenant,
                i.system,
                i.message_id,
                i.digest,
                pks[_key(i)],
                now,
            )
            for i in new
        ],
    )
    deliveries = [(i, d) for i in new for d in i.deliveries]
    numbers = allocate_sequences(
        connection, [SequenceKey.of(d.tenant, d.destination, d.subject) for _, d in deliveries]
    )
    pending = DeliveryState.PENDING.value
    rows = [
        (
            pks[_key(i)],
            d.destination,
            d.tenant,
            subject_key(d.subject),
            number,
            pending,
            0,
            now,
            now,
        )
        for (i, d), number in zip(deliveries, numbers, strict=True)
    ]
    if any(d.waits_for is not None for _, d in deliveries):
        waits = (d.waits_for for _, d in deliveries)
        _INSERT_WAITING_DELIVERIES.execute(
            connection, [(*row, waited) for row, waited in zip(rows, waits, strict=True)]
        )
    else:
        _INSERT_DELIVERIES.execute(connection, rows)
    sequences: list[tuple[int, ...]] = []
    position = 0
    for incoming in new:
        sequences.append(tuple(numbers[position : position + len(incoming.deliveries)]))
        position += len(incoming.deliveries)
    return sequences


def store_incomings(
    session: Session | Connection, incomings: Sequence[Incoming], *, now: datetime
) -> list[StoreOutcome]:
    """Everything of a group of ingests, in the caller's transaction, one outcome per
    incoming (in order). Raises IntegrityError when a concurrent transaction stored one of
    the keys first (the caller retries; nothing of the group is written then)."""
    connection = session.connection() if isinstance(session, Session) else session
    existing = existing_keys(connection, (_key(i) for i in incomings))
    first_in_group: dict[Key, Incoming] = {}
    new: list[Incoming] = []
    entries: list[AuditEntry] = []
    outcomes: list[StoreOutcome | Key | None] = []  # None: new; a key: a stored duplicate
    for incoming in incomings:
        key = _key(incoming)
        earlier = first_in_group.get(key)
        if key in existing or earlier is not None:
            digest = earlier.digest if earlier is not None else existing[key].content_digest
            if digest != incoming.digest:
                outcomes.append(StoreOutcome(None))
                continue
            outcomes.append(
                StoreOutcome(
                    Acknowledgement(incoming.message_id, now, earlier.destinations, duplicate=True)
                )
                if earlier is not None
                else key  # its original acknowledgement is read below
            )
            entries.append(_duplicate_entry(incoming, now))
            continue
        first_in_group[key] = incoming
        new.append(incoming)
        outcomes.append(None)
        entries.append(_stored_entry(incoming, now))
    sequences = iter(_write_new(connection, new, now) if new else [])
    created = {o: existing[o].created_at for o in outcomes if isinstance(o, tuple)}
    acks = original_acks(connection, created) if created else {}
    append_audits_on(connection, entries)  # last: the heads stay locked only until the commit
    settled = []
    for incoming, outcome in zip(incomings, outcomes, strict=True):
        if outcome is None:
            ack = Acknowledgement(incoming.message_id, now, incoming.destinations)
            outcome = StoreOutcome(ack, next(sequences))
        elif not isinstance(outcome, StoreOutcome):
            outcome = StoreOutcome(acks[outcome])
        settled.append(outcome)
    return settled


def _key(incoming: Incoming) -> Key:
    return (incoming.tenant, incoming.system, incoming.message_id)


def store_incoming(
    session: Session | Connection, incoming: Incoming, *, now: datetime
) -> StoreOutcome:
    """Everything of one ingest, in the caller's transaction (several may share one, which is
    how commits can be grouped; :func:`store_incomings` writes a group with fewer
    statements). Raises IntegrityError when a concurrent transaction stored the same key
    first."""
    (outcome,) = store_incomings(session, [incoming], now=now)
    return outcome
