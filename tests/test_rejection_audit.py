"""Refusals are audited after the answer (bus/store/rejection_audit.py): a refusal never waits
for the write turn, yet every record reaches its chain — with back-pressure, retries and a
final flush instead of drops. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bus.hub import Hub
from bus.pipeline import Message
from bus.settings import Settings
from bus.store.audit import UNATTRIBUTED_TENANT, AuditEntry, verify_chain
from bus.store.models import AuditHead, AuditRecord
from bus.store.rejection_audit import RejectionAuditWriter
from bus.store.writers import write_transaction

HOSTILE = b"<r>\x00</r>"  # refused by the secure parse (RK-SEC006), no tenant to attribute


def rejected_count(hub: Hub) -> int:
    with hub.store.sessions() as session:
        query = select(func.count()).select_from(AuditRecord).where(AuditRecord.event == "rejected")
        return session.scalar(query) or 0


@contextmanager
def chain_held(hub: Hub) -> Iterator[Session]:
    """Hold the pseudo-tenant's chain head the way a long ingest commit would: the write turn
    and the head row (FOR UPDATE on PostgreSQL; BEGIN IMMEDIATE locks SQLite as a whole)."""
    with write_transaction(hub.store.sessions) as session:
        head = select(AuditHead).where(AuditHead.tenant == UNATTRIBUTED_TENANT).with_for_update()
        assert session.execute(head).first() is not None
        yield session


def refuse(hub: Hub) -> Message:
    message = hub.ingest(HOSTILE, adapter="rest", source_address="127.0.0.1")  # juki's address
    assert [f.code for f in message.findings] == ["RK-SEC006"]
    return message


def assert_chain_holds(hub: Hub, rejections: int) -> None:
    assert rejected_count(hub) == rejections
    with hub.store.sessions() as session:
        assert verify_chain(session, UNATTRIBUTED_TENANT).ok


def in_thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def entry(number: int) -> AuditEntry:
    return AuditEntry(UNATTRIBUTED_TENANT, "rejected", None, {"codes": [f"T{number}"]})


def test_a_refusal_is_recorded_in_the_chain_after_the_answer(hub: Hub) -> None:
    refuse(hub)
    assert hub.rejections.flush(10)
    with hub.store.sessions() as session:
        (record,) = session.scalars(select(AuditRecord).where(AuditRecord.event == "rejected"))
        assert record.tenant == UNATTRIBUTED_TENANT
        assert record.detail == {"codes": ["RK-SEC006"], "adapter": "rest", "raw_bytes": 8}
        assert verify_chain(session, UNATTRIBUTED_TENANT).ok


def test_a_refusal_is_answered_while_the_chain_is_locked(hub: Hub) -> None:
    refuse(hub)
    assert hub.rejections.flush(10)
    with chain_held(hub):
        answered = in_thread(refuse, hub)
        answered.join(5)
        # committed first, the answer would wait for the lock (SQLite: forever in this thread's
        # own write turn; PostgreSQL: until the row lock is released)
        assert not answered.is_alive()
        assert hub.rejections.pending == 1
    assert hub.rejections.flush(10)
    assert_chain_holds(hub, 2)


def test_a_full_queue_makes_refusals_wait_and_drops_nothing(hub: Hub) -> None:
    refuse(hub)
    assert hub.rejections.flush(10)
    writer = RejectionAuditWriter(hub.store.sessions, max_pending=2)
    try:
        with chain_held(hub):
            submitting = in_thread(lambda: [writer.submit(entry(n)) for n in range(10)])
            submitting.join(1.0)
            # at most one batch in flight (≤ 2, the queue never held more) + 2 queued
            assert submitting.is_alive()
            assert writer.pending <= 4
        submitting.join(10)
        assert not submitting.is_alive()
        assert writer.flush(10)
    finally:
        writer.close()
    assert_chain_holds(hub, 11)


def test_close_writes_what_is_pending_then_writes_directly(hub: Hub) -> None:
    refuse(hub)
    assert hub.rejections.flush(10)
    writer = RejectionAuditWriter(hub.store.sessions)
    with chain_held(hub):
        for number in range(3):
            writer.submit(entry(number))
        closing = in_thread(writer.close)
        time.sleep(0.2)
        assert closing.is_alive()  # waiting for the chain
    closing.join(10)
    assert not closing.is_alive()
    assert rejected_count(hub) == 4
    writer.submit(entry(3))  # closed: written in this thread, before submit returns
    assert rejected_count(hub) == 5


def test_a_failed_write_is_retried_with_the_same_records(tmp_path: object) -> None:
    """A database that refuses the insert (a trigger, SQLite) keeps the records pending; once
    it accepts again they are written, once each."""
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))  # type: ignore[operator]
    try:
        with write_transaction(hub.store.sessions) as session:
            session.execute(
                text(
                    "CREATE TRIGGER refuse_rejected BEFORE INSERT ON audit_records "
                    "WHEN NEW.event = 'rejected' BEGIN SELECT RAISE(ABORT, 'test'); END"
                )
            )
        refuse(hub)
        refuse(hub)
        assert not hub.rejections.flush(1.5)  # at least one failed attempt
        assert hub.rejections.pending == 2
        with write_transaction(hub.store.sessions) as session:
            session.execute(text("DROP TRIGGER refuse_rejected"))
        assert hub.rejections.flush(10)
        assert_chain_holds(hub, 2)
    finally:
        hub.close()
