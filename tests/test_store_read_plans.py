"""The store's reads and purges look rows up by index, never by scanning a table: a message's
status, the console's filters and the retention purge must cost the same in a store of ten
years as in a new one (bench/store_reads.py measures it); the Store stage's idempotency
look-ups the same, whatever the store holds. Every statement these functions run is captured
(also those sent through the DBAPI cursor, bus.store.bulk) and its SQLite query plan read
back."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from adapters.console.detail import message_tenants
from bus.routing import stored_destinations
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery as DeliveryRow
from bus.store.models import DeliveryAttempt
from bus.store.queries import MessageStatus, find_message, list_messages, show_message
from bus.store.retention import purge
from tests.test_retention import LATER, ingest, set_states
from tests.test_store import accepted, sample, stage, with_message_id

# "SCAN deliveries" reads the whole table; "SCAN messages USING … INDEX" walks an index in
# order (a listing with a LIMIT) and is fine. An AUTOMATIC index is built per statement.
_FULL_SCAN = re.compile(r"^SCAN (\w+)$|AUTOMATIC")
# A message looked up by its messageId must be searched by it: a search on the tenant alone
# reads all of the tenant's messages, a covering index scanned is the whole table again.
_BY_MESSAGE_ID = "messages.message_id = "
_MESSAGES_PLAN = re.compile(r"^(SEARCH|SCAN) messages\b")
_TABLES = {"messages", "deliveries", "delivery_attempts", "idempotency_keys", "audit_records"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


def slow_reads(
    store: Store, action: Callable[[], object], *, reading: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """(statement, plan line) for each table scan among the statements ``action`` runs, and
    each look-up by messageId that does not search by it; ``reading``: text some captured
    statement must hold (the look-up meant is among them)."""
    statements: list[str] = []  # as SQLite ran them, the values written in

    def capture(statement: str) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            statements.append(statement)

    def trace(driver: Any, *_: Any) -> None:
        driver.set_trace_callback(capture)

    def untrace(driver: Any, *_: Any) -> None:
        driver.set_trace_callback(None)

    engine = store.engine
    event.listen(engine, "checkout", trace)
    event.listen(engine, "checkin", untrace)
    try:
        action()
    finally:
        event.remove(engine, "checkout", trace)
        event.remove(engine, "checkin", untrace)
    assert statements, "nothing was captured"
    for expected in reading:
        assert any(expected in statement for statement in statements), expected
    scans = []
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        for statement in statements:
            for row in cursor.execute("EXPLAIN QUERY PLAN " + statement):
                detail = str(row[-1])
                if _scans(detail) or _not_by_message_id(statement, detail):
                    scans.append((" ".join(statement.split())[:120], detail))
    return scans


def _scans(detail: str) -> bool:
    found = _FULL_SCAN.search(detail)
    return found is not None and (found.group(1) in _TABLES or "AUTOMATIC" in detail)


def _not_by_message_id(statement: str, detail: str) -> bool:
    return (
        _BY_MESSAGE_ID in statement
        and _MESSAGES_PLAN.match(detail) is not None
        and "message_id=?" not in detail
    )


def test_status_and_listing_read_by_index(store: Store) -> None:
    delivered, dead = ingest(store, 1), ingest(store, 2)
    set_states(store, delivered, "delivered")
    set_states(store, dead, "dead")
    assert delivered.envelope is not None
    message_id, tenant = delivered.envelope.message_id, delivered.envelope.client.tenant

    def reads() -> None:
        with store.sessions() as session:
            find_message(session, message_id, tenant)
            find_message(session, message_id)
            show_message(session, message_id, tenant)
            for status in MessageStatus:
                list_messages(session, status=status, limit=20)
            list_messages(session, tenant=tenant, message_id=message_id)

    assert slow_reads(store, reads, reading=("FROM messages",)) == []


def test_message_id_and_tenant_look_ups_elsewhere_read_by_index(store: Store) -> None:
    """A message found by its id and tenant outside the store's queries: the Route stage's
    ``relates`` look-up (by the sending system too) and the console's tenant check."""
    message = ingest(store, 1)
    assert message.envelope is not None
    message_id, tenant = message.envelope.message_id, message.envelope.client.tenant
    sender = message.envelope.client

    def reads() -> None:
        related = stored_destinations(store.sessions)(sender, message_id)
        assert related is not None
        assert [destination for destination, _ in related.deliveries] == ["tainou", "shuno"]
        with store.sessions() as session:
            assert message_tenants(session, message_id) == {tenant}

    assert slow_reads(store, reads, reading=("FROM messages",)) == []


def test_store_stage_key_look_ups_read_by_index(store: Store) -> None:
    """The Idempotent Receiver's reads on every ingest: the group's stored keys (the first
    statement of each transaction, sent through the DBAPI cursor; a group of several keys,
    as a batch import stores them) and, for a resend, the acknowledgement first given (its
    ``stored`` audit record)."""
    first = ingest(store, 1)
    batch = [accepted(first.raw)]
    batch += [accepted(with_message_id(sample(seed=seed), str(uuid.uuid4()))) for seed in (2, 3)]

    def store_batch() -> None:
        stage(store).store_many(batch)

    reading = ("FROM idempotency_keys", "FROM audit_records")
    assert slow_reads(store, store_batch, reading=reading) == []
    assert [m.ack is not None and m.ack.duplicate for m in batch] == [True, False, False]


def test_purge_reads_by_index(store: Store) -> None:
    messages = [ingest(store, seed) for seed in range(1, 4)]
    for message in messages:
        set_states(store, message, "delivered")
    with store.sessions.begin() as session:
        delivery_id = session.scalars(select(DeliveryRow.id)).first()
        assert delivery_id is not None
        session.add(DeliveryAttempt(delivery_id=delivery_id, attempt=1, at=LATER, outcome="retry"))

    report = None

    def run() -> None:
        nonlocal report
        report = purge(store.sessions, LATER)

    assert slow_reads(store, run) == []
    assert report is not None and report.messages == len(messages)
