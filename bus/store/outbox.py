"""The Transactional Outbox's writes (DESIGN §1 stage 7): message, idempotency key,
deliveries (with per-subject sequence numbers) and audit records of accepted messages, in the
caller's transaction.

:func:`store_incomings` writes a whole group of ingests with one statement per table (a
multi-row insert each, one sequence upsert for all their keys, the audit records appended
last so the tenants' heads stay locked only until the commit); :func:`store_incoming` is the
group of one. Idempotent Receiver: the key is (tenant, sending system, messageId); a key seen
before (in the store or earlier in the group) with the same content digest is a duplicate
(the original acknowledgement, nothing stored), with other content a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from lxml import etree
from sqlalchemy import Connection, Select, Table, and_, bindparam, insert, or_, select
from sqlalchemy.orm import Session

from bus.pipeline import Acknowledgement, Delivery, Message
from bus.store.audit import AuditEntry, append_audits, utc
from bus.store.digest import document_digest
from bus.store.models import (
    AuditRecord,
    DeliveryState,
    IdempotencyKey,
    MessageKind,
    StoredMessage,
)
from bus.store.models import (
    Delivery as DeliveryRow,
)
from bus.store.sequences import SequenceKey, next_sequences, subject_key

Retention = Callable[[str], timedelta]
Key = tuple[str, str, str]  # tenant, sending system, messageId


class NotValidated(ValueError):
    """The Store stage was given a message the Validate stage has not filled in."""


_KEYS = cast(Table, IdempotencyKey.__table__)
_MESSAGES = cast(Table, StoredMessage.__table__)
_KEY_COLUMNS = (_KEYS.c.tenant, _KEYS.c.system, _KEYS.c.message_id)


@cache
def _select_keys(count: int) -> Select[Any]:
    """The stored keys among ``count`` (tenant, system, messageId) triples, as an OR of
    primary-key equalities (a row-value ``IN`` list makes SQLite scan the table); one
    statement per group size, so each is compiled once."""
    matches = [
        and_(*(column == bindparam(f"{column.name}_{i}") for column in _KEY_COLUMNS))
        for i in range(count)
    ]
    return select(*_KEY_COLUMNS, _KEYS.c.content_digest, _KEYS.c.created_at).where(or_(*matches))


_INSERT_MESSAGES = insert(_MESSAGES).returning(
    _MESSAGES.c.id, _MESSAGES.c.tenant, _MESSAGES.c.system, _MESSAGES.c.message_id
)
_INSERT_KEY = insert(_KEYS)
_INSERT_DELIVERY = insert(cast(Table, DeliveryRow.__table__))


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


def _original_ack(session: Session, incoming: Incoming, key_created: datetime) -> Acknowledgement:
    """The acknowledgement first given for this key, as the ``stored`` audit record kept it
    (it outlives a purge of the message itself)."""
    record = session.scalars(
        select(AuditRecord)
        .where(
            AuditRecord.tenant == incoming.tenant,
            AuditRecord.message_id == incoming.message_id,
            AuditRecord.event == "stored",
            AuditRecord.actor == incoming.system,
        )
        .order_by(AuditRecord.seq)
        .limit(1)
    ).first()
    if record is None:  # not expected: the record is written with the key
        return Acknowledgement(incoming.message_id, key_created, (), duplicate=True)
    destinations = tuple(str(d) for d in record.detail.get("destinations", ()))
    return Acknowledgement(incoming.message_id, utc(record.at), destinations, duplicate=True)


KEYS_PER_SELECT = 256  # SQLite refuses an expression deeper than 1,000 (a batch import's 1,000)


def _existing_keys(connection: Connection, incomings: Sequence[Incoming]) -> dict[Key, Any]:
    every = sorted({(i.tenant, i.system, i.message_id) for i in incomings})
    found: dict[Key, Any] = {}
    for start in range(0, len(every), KEYS_PER_SELECT):
        keys = every[start : start + KEYS_PER_SELECT]
        # Pad to a power of two (repeating the last key): a handful of statements to
        # compile, whatever sizes the groups take under load.
        keys += keys[-1:] * ((1 << (len(keys) - 1).bit_length()) - len(keys))
        parameters = {
            f"{name}_{i}": value
            for i, key in enumerate(keys)
            for name, value in zip(("tenant", "system", "message_id"), key, strict=True)
        }
        rows = connection.execute(_select_keys(len(keys)), parameters)
        found.update({(row.tenant, row.system, row.message_id): row for row in rows})
    return found


def _message_row(incoming: Incoming) -> dict[str, Any]:
    return {
        "message_id": incoming.message_id,
        "tenant": incoming.tenant,
        "system": incoming.system,
        "service": incoming.service,
        "kind": incoming.kind,
        "subject": incoming.subject,
        "correlation_id": incoming.correlation_id,
        "relates_to": incoming.relates_to,
        "body": incoming.body,
        "body_digest": incoming.digest,
        "received_at": incoming.received_at,
        "expires_at": incoming.expires_at,
    }


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
    connection: Connection, session: Session, new: Sequence[Incoming], now: datetime
) -> list[tuple[int, ...]]:
    """Messages, keys and deliveries of the new messages; their sequence numbers."""
    inserted = connection.execute(_INSERT_MESSAGES, [_message_row(i) for i in new])
    pks = {(row.tenant, row.system, row.message_id): row.id for row in inserted}
    connection.execute(
        _INSERT_KEY,
        [
            {
                "tenant": i.tenant,
                "system": i.system,
                "message_id": i.message_id,
                "content_digest": i.digest,
                "message_pk": pks[(i.tenant, i.system, i.message_id)],
                "created_at": now,
            }
            for i in new
        ],
    )
    deliveries = [(i, d) for i in new for d in i.deliveries]
    numbers = next_sequences(
        session, [SequenceKey.of(d.tenant, d.destination, d.subject) for _, d in deliveries]
    )
    if deliveries:
        connection.execute(
            _INSERT_DELIVERY,
            [
                {
                    "message_pk": pks[(i.tenant, i.system, i.message_id)],
                    "destination": d.destination,
                    "tenant": d.tenant,
                    "subject_key": subject_key(d.subject),
                    "sequence": number,
                    "state": DeliveryState.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for (i, d), number in zip(deliveries, numbers, strict=True)
            ],
        )
    sequences: list[tuple[int, ...]] = []
    position = 0
    for incoming in new:
        sequences.append(tuple(numbers[position : position + len(incoming.deliveries)]))
        position += len(incoming.deliveries)
    return sequences


def store_incomings(
    session: Session, incomings: Sequence[Incoming], *, now: datetime
) -> list[StoreOutcome]:
    """Everything of a group of ingests, in the caller's transaction, one outcome per
    incoming (in order). Raises IntegrityError when a concurrent transaction stored one of
    the keys first (the caller retries; nothing of the group is written then)."""
    connection = session.connection()
    existing = _existing_keys(connection, incomings)
    first_in_group: dict[Key, Incoming] = {}
    new: list[Incoming] = []
    entries: list[AuditEntry] = []
    outcomes: list[StoreOutcome | None] = []  # None: new, filled in below
    for incoming in incomings:
        key = (incoming.tenant, incoming.system, incoming.message_id)
        earlier = first_in_group.get(key)
        if key in existing or earlier is not None:
            digest = earlier.digest if earlier is not None else existing[key].content_digest
            if digest != incoming.digest:
                outcomes.append(StoreOutcome(None))
                continue
            ack = (
                Acknowledgement(incoming.message_id, now, earlier.destinations, duplicate=True)
                if earlier is not None
                else _original_ack(session, incoming, utc(existing[key].created_at))
            )
            outcomes.append(StoreOutcome(ack))
            entries.append(_duplicate_entry(incoming, now))
            continue
        first_in_group[key] = incoming
        new.append(incoming)
        outcomes.append(None)
        entries.append(_stored_entry(incoming, now))
    sequences = iter(_write_new(connection, session, new, now) if new else [])
    append_audits(session, entries)  # last: the heads stay locked only until the commit
    return [
        outcome
        if outcome is not None
        else StoreOutcome(
            Acknowledgement(incoming.message_id, now, incoming.destinations), next(sequences)
        )
        for incoming, outcome in zip(incomings, outcomes, strict=True)
    ]


def store_incoming(session: Session, incoming: Incoming, *, now: datetime) -> StoreOutcome:
    """Everything of one ingest, in the caller's transaction (several may share one, which is
    how commits can be grouped; :func:`store_incomings` writes a group with fewer
    statements). Raises IntegrityError when a concurrent transaction stored the same key
    first."""
    (outcome,) = store_incomings(session, [incoming], now=now)
    return outcome
