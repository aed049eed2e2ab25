"""The Store stage (DESIGN §1 stage 7): a Transactional Outbox with an Idempotent Receiver.

One transaction holds the message, its idempotency key, one delivery per destination (with a
per-subject sequence number) and the ``stored`` audit record. Only after the commit are the
dispatch workers woken and the sender acknowledged; a database error propagates (the adapter
answers 5xx) and leaves nothing behind.

Idempotent Receiver: the key is (tenant, sending system, messageId). A resend with the same
content digest gets the original acknowledgement back (``duplicate=True``) and stores nothing;
different content under the same key is refused with RK-STO001. Two ingests of one key racing
each other collide on the primary key; the loser rolls back and re-reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from lxml import etree
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bus.errors import make_finding
from bus.pipeline import Acknowledgement, Delivery, Message, StageName
from bus.store.audit import append_audit, utc
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

log = logging.getLogger(__name__)

Retention = Callable[[str], timedelta]
MESSAGE_ID_PATH = "/PlatformMessage/Header/messageId"


class WakeupNotifier(Protocol):
    """Wakes the dispatch workers of some destinations (kombu in :mod:`bus.dispatch`)."""

    def notify(self, destinations: Iterable[str]) -> None: ...


class NotValidated(ValueError):
    """The Store stage was given a message the Validate stage has not filled in."""


_KEYS = cast(Table, IdempotencyKey.__table__)
_MESSAGES = cast(Table, StoredMessage.__table__)
_SELECT_KEY = select(_KEYS.c.content_digest, _KEYS.c.created_at).where(
    _KEYS.c.tenant == bindparam("tenant"),
    _KEYS.c.system == bindparam("system"),
    _KEYS.c.message_id == bindparam("message_id"),
)
_INSERT_MESSAGE = insert(_MESSAGES).returning(_MESSAGES.c.id)
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


def _insert_deliveries(
    session: Session, incoming: Incoming, message_pk: int, now: datetime
) -> tuple[int, ...]:
    """One pending delivery per destination, each numbered last in its subject's order."""
    sequences = next_sequences(
        session,
        [SequenceKey.of(d.tenant, d.destination, d.subject) for d in incoming.deliveries],
    )
    if incoming.deliveries:
        session.connection().execute(
            _INSERT_DELIVERY,
            [
                {
                    "message_pk": message_pk,
                    "destination": delivery.destination,
                    "tenant": delivery.tenant,
                    "subject_key": subject_key(delivery.subject),
                    "sequence": sequence,
                    "state": DeliveryState.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for delivery, sequence in zip(incoming.deliveries, sequences, strict=True)
            ],
        )
    return tuple(sequences)


def store_incoming(session: Session, incoming: Incoming, *, now: datetime) -> StoreOutcome:
    """Everything of one ingest, in the caller's transaction (several may share one, which is
    how commits can be grouped). Raises IntegrityError when a concurrent transaction stored
    the same key first."""
    connection = session.connection()
    key = connection.execute(
        _SELECT_KEY,
        {"tenant": incoming.tenant, "system": incoming.system, "message_id": incoming.message_id},
    ).first()
    if key is not None:
        if key.content_digest != incoming.digest:
            return StoreOutcome(None)
        ack = _original_ack(session, incoming, utc(key.created_at))
        append_audit(
            session,
            tenant=incoming.tenant,
            event="duplicate",
            message_id=incoming.message_id,
            detail={"service": incoming.service, "digest": incoming.digest},
            actor=incoming.system,
            at=now,
        )
        return StoreOutcome(ack)
    message_pk = connection.execute(
        _INSERT_MESSAGE,
        {
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
        },
    ).scalar_one()
    connection.execute(
        _INSERT_KEY,
        {
            "tenant": incoming.tenant,
            "system": incoming.system,
            "message_id": incoming.message_id,
            "content_digest": incoming.digest,
            "message_pk": message_pk,
            "created_at": now,
        },
    )
    sequences = _insert_deliveries(session, incoming, message_pk, now)
    append_audit(
        session,
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
    return StoreOutcome(Acknowledgement(incoming.message_id, now, incoming.destinations), sequences)


@dataclass(frozen=True, slots=True)
class StoreStage:
    """Stores accepted messages; acknowledges only after the commit."""

    sessions: sessionmaker[Session]
    wakeups: WakeupNotifier
    retention: Retention
    name: StageName = StageName.STORE

    def __call__(self, message: Message) -> Message:
        if message.rejected:
            return message
        incoming = Incoming.from_message(message, self.retention)
        outcome = self._commit(incoming)
        if outcome.ack is None:
            message.add_findings(
                [make_finding("RK-STO001", path=MESSAGE_ID_PATH, actual=incoming.message_id)]
            )
            return message
        if not outcome.ack.duplicate:
            for delivery, sequence in zip(message.deliveries, outcome.sequences, strict=True):
                delivery.sequence = sequence
            self._wake(outcome.ack.destinations)
        message.ack = outcome.ack
        return message

    def _commit(self, incoming: Incoming) -> StoreOutcome:
        try:
            with self.sessions.begin() as session:
                return store_incoming(session, incoming, now=datetime.now(UTC))
        except IntegrityError:
            # A concurrent ingest stored the same key between our read and our insert:
            # re-read (a second failure is a real error and propagates).
            log.info("idempotency key raced; re-reading", extra={"tenant": incoming.tenant})
            with self.sessions.begin() as session:
                return store_incoming(session, incoming, now=datetime.now(UTC))

    def _wake(self, destinations: tuple[str, ...]) -> None:
        """The database is the queue: a lost wake-up only delays a delivery until the
        workers' next poll, so it must not turn a committed message into an error."""
        if not destinations:
            return
        try:
            self.wakeups.notify(destinations)
        except Exception:
            log.warning("wake-up failed; workers will find the deliveries when polling")
