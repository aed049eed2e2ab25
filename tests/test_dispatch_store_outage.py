"""Dispatch across a store outage between a round's sends and the record of their outcomes.

The store fails for real: the SQLite file locked by another connection (``BEGIN EXCLUSIVE``,
as a ``sqlite3`` shell or an old hub would; the busy timeout shortened to 0.1 s), or the
PostgreSQL database's connections terminated and refused (``pg_terminate_backend`` and
``ALLOW_CONNECTIONS false``). A worker whose round could not be recorded used to leave the
round's deliveries leased to itself until the lease expired (30 s), their subjects' next
messages waiting behind them, and then sent them a second time. It now keeps the outcomes it
could not record and records them as soon as the store answers (no second send), releasing
whatever else it still held."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

import bus.store.db as store_db
from bus.config.models import Endpoint
from bus.dispatch.claims import claim
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from bus.dispatch.worker import Worker
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery, DeliveryAttempt
from tests.support.postgres import POSTGRES_ADMIN_URL
from tests.support.receivers import wait_for
from tests.test_dispatch import add_message, hub_config

DESTINATION = "zeimu"


class Recorder:
    """A transport that records each send; ``hook`` runs inside the first send (the store
    fails while the receiver holds the message)."""

    def __init__(self, hook: Callable[[], None] | None = None) -> None:
        self.sent: list[tuple[str, float]] = []
        self._hook = hook

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        self.sent.append((message.message_id, time.monotonic()))
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return SendResult(Outcome.DELIVERED)

    def close(self) -> None:
        pass

    def times(self, message_id: str) -> list[float]:
        return [at for sent, at in self.sent if sent == message_id]


def _worker(store: Store, transport: Recorder, worker_id: str = "w1", **options: object) -> Worker:
    settings: dict[str, object] = {"lease_seconds": 30, "poll_seconds": 0.05}
    settings.update(options)
    return Worker(
        store.sessions,
        lambda: hub_config({DESTINATION: "http://127.0.0.1:9/"}),
        None,
        worker_id,
        transports={"http": transport},
        send_concurrency=1,
        **settings,  # type: ignore[arg-type]
    )


def _state(store: Store, delivery: int) -> tuple[str, str | None]:
    with store.sessions() as session:
        row = session.execute(
            select(Delivery.state, Delivery.lease_owner).where(Delivery.id == delivery)
        ).one()
        return row.state, row.lease_owner


def _attempts(store: Store, delivery: int) -> int:
    with store.sessions() as session:
        return len(
            session.scalars(
                select(DeliveryAttempt.id).where(DeliveryAttempt.delivery_id == delivery)
            ).all()
        )


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The embedded store, giving up on a lock after 0.1 s rather than 30 s."""
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    opened = open_store(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


class FileLock:
    """Another process's write lock on the SQLite store (what an outage is on SQLite)."""

    def __init__(self, store: Store) -> None:
        database = store.engine.url.database
        assert database is not None
        self._holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)

    def take(self) -> None:
        self._holder.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._holder.execute("ROLLBACK")

    def close(self) -> None:
        self._holder.close()


# --- the running worker -------------------------------------------------------------------


def _outage_between_send_and_record(
    store: Store, fail: Callable[[], None], restore: Callable[[], None], *, outage: float
) -> tuple[Recorder, str, str, list[int], float]:
    """Run a worker; the store fails while the receiver holds S1#1, for ``outage`` seconds.
    Returns the transport, both messageIds, their delivery ids and when the store came back."""
    failed = threading.Event()

    def during_send() -> None:
        fail()
        failed.set()

    transport = Recorder(during_send)
    first, (first_delivery,) = add_message(store.sessions, "S1", (DESTINATION,))
    second, (second_delivery,) = add_message(store.sessions, "S1", (DESTINATION,))
    worker = _worker(store, transport)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert failed.wait(5)
        time.sleep(outage)  # the worker's rounds fail meanwhile
        restore()
        back = time.monotonic()
        wait_for(lambda: bool(transport.times(second)), timeout=2.5)
        wait_for(lambda: _state(store, second_delivery)[0] == "delivered", timeout=2.5)
    finally:
        restore()
        stop.set()
        thread.join(10)
    return transport, first, second, [first_delivery, second_delivery], back


def test_sqlite_locked_after_the_send_records_the_outcome_once_the_lock_is_gone(
    sqlite_store: Store,
) -> None:
    lock = FileLock(sqlite_store)
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            lock.release()

    try:
        transport, first, second, deliveries, back = _outage_between_send_and_record(
            sqlite_store, lock.take, release, outage=0.4
        )
    finally:
        lock.close()
    assert len(transport.times(first)) == 1  # its outcome was kept, not sent again
    assert transport.times(second)[0] - back < 1.0  # not after the 30 s lease
    for delivery in deliveries:
        assert _state(sqlite_store, delivery) == ("delivered", None)
        assert _attempts(sqlite_store, delivery) == 1


@pytest.mark.postgres
def test_postgres_connections_terminated_after_the_send_recover_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
    name = postgres_url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    down = threading.Event()

    def fail() -> None:
        down.set()
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )

    def restore() -> None:
        if down.is_set():
            down.clear()
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    try:
        transport, first, second, deliveries, back = _outage_between_send_and_record(
            store, fail, restore, outage=0.5
        )
        assert len(transport.times(first)) == 1
        assert transport.times(second)[0] - back < 1.5
        for delivery in deliveries:
            assert _state(store, delivery) == ("delivered", None)
            assert _attempts(store, delivery) == 1
    finally:
        restore()
        store.close()
        admin.dispose()


# --- one round at a time ------------------------------------------------------------------


def _failed_round(store: Store, lock: FileLock, worker: Worker) -> None:
    """``worker`` sends its round, then finds the store locked when recording it."""
    original = worker._send

    def send_then_lock(*args: object) -> SendResult:
        result = original(*args)  # type: ignore[arg-type]
        lock.take()
        return result

    worker._send = send_then_lock  # type: ignore[method-assign]
    try:
        with pytest.raises(OperationalError):
            worker.run_once()
    finally:
        worker._send = original  # type: ignore[method-assign]
        lock.release()


def test_a_worker_stopped_after_the_outage_records_what_it_sent(sqlite_store: Store) -> None:
    lock = FileLock(sqlite_store)
    transport = Recorder()
    worker = _worker(sqlite_store, transport)
    _, (delivery,) = add_message(sqlite_store.sessions, "S1", (DESTINATION,))
    try:
        _failed_round(sqlite_store, lock, worker)
        assert _state(sqlite_store, delivery) == ("pending", "w1")
        worker.close()  # stopping: what was sent is recorded, nothing left leased
    finally:
        lock.close()
    assert _state(sqlite_store, delivery) == ("delivered", None)
    assert len(transport.sent) == 1


def test_an_outcome_kept_past_a_lease_taken_over_is_dropped(sqlite_store: Store) -> None:
    """The rule after a lease expiry stands: the new owner's lease is never overwritten."""
    lock = FileLock(sqlite_store)
    now = datetime.now(UTC)
    worker = _worker(sqlite_store, Recorder(), clock=lambda: now)
    _, (delivery,) = add_message(
        sqlite_store.sessions, "S1", (DESTINATION,), now=now - timedelta(seconds=1)
    )
    try:
        _failed_round(sqlite_store, lock, worker)
    finally:
        lock.close()
    later = now + timedelta(seconds=31)  # the outage outlived the lease
    with sqlite_store.sessions.begin() as session:
        taken = claim(session, "w2", later, timedelta(seconds=30), 10, set())
        assert [d.id for d in taken] == [delivery]
    assert worker.run_once() == 0  # records nothing over w2's lease
    assert _state(sqlite_store, delivery) == ("pending", "w2")
    assert _attempts(sqlite_store, delivery) == 0
    worker.close()


def test_a_claim_committed_unbeknown_to_the_worker_is_released_after_the_outage(
    sqlite_store: Store,
) -> None:
    """A commit whose answer was lost (the connection dropped during COMMIT) leaves
    deliveries leased to a worker that does not know them; its first round after the outage
    takes them again at once instead of leaving them to their lease."""
    lock = FileLock(sqlite_store)
    transport = Recorder()
    worker = _worker(sqlite_store, transport)
    lock.take()
    try:
        with pytest.raises(OperationalError):
            worker.run_once()  # the claim fails: the store is locked
    finally:
        lock.release()
        lock.close()
    message, (delivery,) = add_message(sqlite_store.sessions, "S1", (DESTINATION,))
    with sqlite_store.sessions.begin() as session:  # as if that claim had committed
        assert [d.id for d in claim(session, "w1", datetime.now(UTC), timedelta(seconds=30), 9)]
    assert worker.run_once() == 1
    worker.close()
    assert transport.times(message)
    assert _state(sqlite_store, delivery) == ("delivered", None)
