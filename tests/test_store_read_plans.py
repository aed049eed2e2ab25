"""The store's reads and purges look rows up by index, never by scanning a table: a message's
status, the console's filters and the retention purge must cost the same in a store of ten
years as in a new one (bench/store_reads.py measures it). Every statement these functions run
is captured and its SQLite query plan read back."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery as DeliveryRow
from bus.store.models import DeliveryAttempt
from bus.store.queries import MessageStatus, find_message, list_messages, show_message
from bus.store.retention import purge
from tests.test_retention import LATER, ingest, set_states

# "SCAN deliveries" reads the whole table; "SCAN messages USING … INDEX" walks an index in
# order (a listing with a LIMIT) and is fine. An AUTOMATIC index is built per statement.
_FULL_SCAN = re.compile(r"^SCAN (\w+)$|AUTOMATIC")
_TABLES = {"messages", "deliveries", "delivery_attempts", "idempotency_keys", "audit_records"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


def full_scans(store: Store, action: Callable[[], object]) -> list[tuple[str, str]]:
    """(statement, plan line) for each table scan among the statements ``action`` runs."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            statements.append((statement, parameters))

    engine = store.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert statements, "nothing was captured"
    scans = []
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        for statement, parameters in statements:
            for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters):
                detail = str(row[-1])
                found = _FULL_SCAN.search(detail)
                if found and (found.group(1) in _TABLES or "AUTOMATIC" in detail):
                    scans.append((" ".join(statement.split())[:120], detail))
    return scans


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

    assert full_scans(store, reads) == []


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

    assert full_scans(store, run) == []
    assert report is not None and report.messages == len(messages)
