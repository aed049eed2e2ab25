"""The Store stage (DESIGN §1 stage 7): a Transactional Outbox with an Idempotent Receiver.

One transaction holds the message, its idempotency key, one delivery per destination (with a
per-subject sequence number) and the ``stored`` audit record (the writes are in
:mod:`bus.store.outbox`). Only after the commit are the dispatch workers woken and the sender
acknowledged; a database error propagates (the adapter answers 5xx) and leaves nothing
behind.

Commits are grouped (DESIGN §6): messages arriving while a transaction is being written are
stored together in the next one (:mod:`bus.store.group_commit`), each still acknowledged only
after the commit that holds it. An idle hub commits a message at once.

A store that is full (:func:`bus.store.write_health.is_storage_full`: SQLite's "database or
disk is full", PostgreSQL's disk_full 53100) refuses the message with RK-STO007 instead of raising:
the transaction is rolled back, the adapters answer 503 with ``Retry-After``, and
:class:`bus.store.write_health.WriteHealth` logs it once and tells readiness.

Idempotent Receiver: the key is (tenant, sending system, messageId). A resend with the same
content digest gets the original acknowledgement back (``duplicate=True``) and stores nothing;
different content under the same key is refused with RK-STO001. Two ingests of one key racing
each other collide on the primary key; the loser rolls back and re-reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bus.errors import make_finding
from bus.pipeline import Message, StageName
from bus.store.clock import database_now
from bus.store.group_commit import GroupCommit
from bus.store.outbox import (
    Incoming,
    NotValidated,
    Retention,
    StoreOutcome,
    store_incoming,
    store_incomings,
)
from bus.store.write_health import (
    WriteHealth,
    is_storage_full,
    is_store_unavailable,
    write_health,
)
from bus.store.writers import write_connection, write_transaction, writer_turn

__all__ = [
    "MESSAGE_ID_PATH",
    "Incoming",
    "NotValidated",
    "Retention",
    "StoreOutcome",
    "StoreStage",
    "WakeupNotifier",
    "store_incoming",
    "store_incomings",
]

log = logging.getLogger(__name__)

MESSAGE_ID_PATH = "/PlatformMessage/Header/messageId"
MAX_GROUP = 100  # messages per grouped commit


class WakeupNotifier(Protocol):
    """Wakes the dispatch workers of some destinations (kombu in :mod:`bus.dispatch`)."""

    def notify(self, destinations: Iterable[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreStage:
    """Stores accepted messages; acknowledges only after the commit."""

    sessions: sessionmaker[Session]
    wakeups: WakeupNotifier
    retention: Retention
    name: StageName = StageName.STORE
    _group: GroupCommit[Incoming, StoreOutcome] = field(init=False, repr=False, compare=False)
    _health: WriteHealth = field(init=False, repr=False, compare=False)
    #: per leader thread: a group the store could not be reached for, and its messages
    #: whose one-by-one retry must fail at once (:meth:`_commit_group`)
    _unreached: threading.local = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        group = GroupCommit(
            self._commit_group, self._commit, MAX_GROUP, lambda: writer_turn(self.sessions)
        )
        object.__setattr__(self, "_group", group)
        object.__setattr__(self, "_health", write_health(self.sessions))
        object.__setattr__(self, "_unreached", threading.local())

    def __call__(self, message: Message) -> Message:
        if message.rejected:
            return message
        incoming = Incoming.from_message(message, self.retention)
        try:
            outcome = self._group.submit(incoming)
        except SQLAlchemyError as error:
            if not is_storage_full(error):
                raise
            self._refuse(message, error)
            return message
        self._health.succeeded()
        _settle(message, incoming, outcome)
        return message

    def store_many(
        self, messages: Sequence[Message], also: Callable[[Session], None] | None = None
    ) -> bool:
        """A batch of accepted messages in one transaction with their audit records, plus
        ``also`` (e.g. the batch's rejection audits) in the same transaction. When that
        transaction fails, each message is stored alone, so nothing is half-stored. When it
        fails because the store is full, nothing is retried: each message is refused with
        RK-STO007 and ``also`` is not written (``False``: the caller audits otherwise). When it
        fails because the store cannot be reached now (a lock not granted in time, the
        connection lost), the error propagates at once: each message alone would wait again."""
        incomings = [Incoming.from_message(message, self.retention) for message in messages]
        outcomes: list[StoreOutcome | None]
        try:
            with write_transaction(self.sessions) as session:
                now = database_now(session.connection())
                stored = store_incomings(session, incomings, now=now) if incomings else []
                if also is not None:
                    also(session)
        except SQLAlchemyError as error:
            if is_storage_full(error):
                for message in messages:
                    self._refuse(message, error)
                return also is None
            if is_store_unavailable(error):  # one by one would wait for the lock again each
                raise
            log.info("batch commit failed; storing its messages one by one")
            pairs = zip(messages, incomings, strict=True)
            outcomes = [self._commit_or_refuse(m, i) for m, i in pairs]
            if also is not None:
                with write_transaction(self.sessions) as session:
                    also(session)
        else:
            self._health.succeeded()
            self._wake(stored)
            outcomes = list(stored)
        for message, incoming, outcome in zip(messages, incomings, outcomes, strict=True):
            if outcome is not None:
                _settle(message, incoming, outcome)
        return True

    def _commit_or_refuse(self, message: Message, incoming: Incoming) -> StoreOutcome | None:
        try:
            outcome = self._commit(incoming)
        except SQLAlchemyError as error:
            if not is_storage_full(error):
                raise
            self._refuse(message, error)
            return None
        self._health.succeeded()
        return outcome

    def _refuse(self, message: Message, error: SQLAlchemyError) -> None:
        """RK-STO007: the store is full (its transaction was rolled back)."""
        self._health.failed(error)
        message.add_findings([make_finding("RK-STO007", path="/")])

    def _commit_group(self, incomings: Sequence[Incoming]) -> list[StoreOutcome]:
        """Several messages in one transaction. A failure is retried message by message
        (:class:`GroupCommit`), except when the store cannot be reached now: each message of
        the group then fails at once with that error (:meth:`_commit`) instead of waiting
        for the lock (or the connection) again, one after the other."""
        try:
            with write_connection(self.sessions) as connection:
                outcomes = store_incomings(connection, incomings, now=database_now(connection))
        except SQLAlchemyError as error:
            if is_store_unavailable(error):  # the retries run next, in this thread
                self._unreached.group = (error, list(incomings))
            raise
        self._wake(outcomes)
        return outcomes

    def _commit(self, incoming: Incoming) -> StoreOutcome:
        unreached: tuple[SQLAlchemyError, list[Incoming]] | None = getattr(
            self._unreached, "group", None
        )
        if unreached is not None:
            error, pending = unreached
            if any(item is incoming for item in pending):  # a retry of a group not stored
                pending[:] = [item for item in pending if item is not incoming]
                if not pending:
                    self._unreached.group = None
                raise error
        try:
            with write_connection(self.sessions) as connection:
                outcome = store_incoming(connection, incoming, now=database_now(connection))
        except IntegrityError:
            # A concurrent ingest stored the same key between our read and our insert:
            # re-read (a second failure is a real error and propagates).
            log.info("idempotency key raced; re-reading", extra={"tenant": incoming.tenant})
            with write_connection(self.sessions) as connection:
                outcome = store_incoming(connection, incoming, now=database_now(connection))
        self._wake([outcome])
        return outcome

    def _wake(self, outcomes: Sequence[StoreOutcome]) -> None:
        """One wake-up for a committed group. The database is the queue: a lost wake-up only
        delays a delivery until the workers' next poll, so it must not turn a committed
        message into an error."""
        destinations = tuple(
            dict.fromkeys(
                destination
                for outcome in outcomes
                if outcome.ack is not None and not outcome.ack.duplicate
                for destination in outcome.ack.destinations
            )
        )
        if not destinations:
            return
        try:
            self.wakeups.notify(destinations)
        except Exception:
            log.warning("wake-up failed; workers will find the deliveries when polling")


def _settle(message: Message, incoming: Incoming, outcome: StoreOutcome) -> None:
    """The acknowledgement (and delivery sequence numbers) on the message, or RK-STO001 when
    its key was seen with other content."""
    if outcome.ack is None:
        message.add_findings(
            [make_finding("RK-STO001", path=MESSAGE_ID_PATH, actual=incoming.message_id)]
        )
        return
    if not outcome.ack.duplicate:
        for delivery, sequence in zip(message.deliveries, outcome.sequences, strict=True):
            delivery.sequence = sequence
    message.ack = outcome.ack
