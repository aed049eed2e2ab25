"""The Store stage's grouped writes against their general paths, on SQLite and PostgreSQL:

* the multi-row inserts through the DBAPI cursor (:mod:`bus.store.bulk`) store exactly the
  column values SQLAlchemy Core's ``insert`` stores for the same rows;
* a group written in one transaction (duplicates and conflicts within the group and against
  the store, two messages of one subject) gives the outcomes, rows and audit chain of the
  same messages stored one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert

from bus.settings import Settings
from bus.store.audit import _INSERT_RECORDS, AuditEntry, append_audits_on, verify_chain
from bus.store.bulk import BulkInsert
from bus.store.db import Store, open_store
from bus.store.ingest import Incoming, StoreOutcome, store_incomings
from bus.store.outbox import _INSERT_DELIVERIES, _INSERT_KEYS, _INSERT_MESSAGES
from bus.store.sequences import _ALLOCATE
from tests.conftest import require_service
from tests.support.postgres import scratch_database
from tests.test_store import accepted, retention, sample, with_message_id

A_KEY, D_KEY = "a0000000-0000-4000-8000-00000000000a", "d0000000-0000-4000-8000-00000000000d"
NOW = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two empty stores of one kind (the grouped and the one-by-one run)."""
    with ExitStack() as stack:
        settings = []
        for name in ("a", "b"):
            if request.param == "sqlite":
                settings.append(Settings(data_dir=tmp_path / name))
            else:
                require_service("postgresql")
                url = stack.enter_context(scratch_database("renkei_test_grouped"))
                settings.append(Settings(data_dir=tmp_path / name, database_url=url))
        stores = [open_store(s) for s in settings]
        try:
            yield stores[0], stores[1]
        finally:
            for store in stores:
                store.close()


# --- the bulk inserts store what Core stores ------------------------------------------------


def _raw_rows(connection: Connection, bulk: BulkInsert) -> list[tuple[Any, ...]]:
    """The stored values as the driver reads them back (JSON as its stored text)."""
    columns = ", ".join(
        f"CAST({name} AS TEXT)" if name == "detail" else name for name in bulk.columns
    )
    statement = f"SELECT {columns} FROM {bulk.table.name} ORDER BY {bulk.columns[0]}"
    return [tuple(row) for row in connection.exec_driver_sql(statement)]


def _written(store: Store, bulk: BulkInsert, rows: list[tuple[Any, ...]], core: bool) -> Any:
    with store.engine.connect() as connection:
        transaction = connection.begin()
        if core:
            records = [dict(zip(bulk.columns, row, strict=True)) for row in rows]
            connection.execute(insert(bulk.table), records)
        else:
            bulk.execute(connection, rows)
        stored = _raw_rows(connection, bulk)
        transaction.rollback()
    return stored


def _message_pk(store: Store) -> int:
    incoming = Incoming.from_message(accepted(sample(seed=7)), retention)
    with store.engine.begin() as connection:
        store_incomings(connection, [incoming], now=NOW)
        return int(connection.exec_driver_sql("SELECT id FROM messages").scalar_one())


def _rows_for(bulk: BulkInsert, pk: int) -> list[tuple[Any, ...]]:
    later = NOW + timedelta(days=365, microseconds=1)
    incomings = [
        Incoming.from_message(accepted(sample(seed=seed)), retention) for seed in (1, 2, 3)
    ]
    if bulk is _INSERT_MESSAGES:
        return [
            (
                i.message_id,
                i.tenant,
                i.system,
                i.service,
                i.kind,
                i.subject,
                None,
                "x",
                i.body,
                i.digest,
                i.received_at,
                later,
            )
            for i in incomings
        ]
    if bulk is _INSERT_KEYS:
        return [(i.tenant, i.system, i.message_id, i.digest, pk, NOW) for i in incomings]
    if bulk is _INSERT_DELIVERIES:
        return [
            (pk, name, "412066", "", n, "pending", 0, NOW, later) for n, name in enumerate("abc")
        ]
    if bulk is _ALLOCATE:
        return [("412066", name, f"s{n}", n + 1) for n, name in enumerate("abc")]
    detail = {"destinations": ["zeimu", "住民記録"], "n": 3, "nested": {"b": None, "a": 1.5}}
    return [
        (
            "999999",
            seq,
            NOW + timedelta(seconds=seq),
            "stored",
            "m-1",
            "juki",
            detail,
            "0" * 64,
            f"{seq:064d}",
        )
        for seq in (1, 2)
    ]


BULKS = {
    "messages": _INSERT_MESSAGES,
    "keys": _INSERT_KEYS,
    "deliveries": _INSERT_DELIVERIES,
    "sequences": _ALLOCATE,
    "audit records": _INSERT_RECORDS,
}


@pytest.mark.parametrize("name", sorted(BULKS))
def test_bulk_insert_stores_what_core_stores(store_settings: Settings, name: str) -> None:
    store = open_store(store_settings)
    try:
        bulk = BULKS[name]
        rows = _rows_for(bulk, _message_pk(store))
        core = _written(store, bulk, rows, core=True)
        assert len(core) >= len(rows)
        assert _written(store, bulk, rows, core=False) == core
    finally:
        store.close()


def test_bulk_insert_splits_long_inserts(store_settings: Settings) -> None:
    """More rows than one statement may carry parameters for: every row is written, and the
    returned rows are all there."""
    store = open_store(store_settings)
    try:
        rows = [("412066", "zeimu", f"s{n:05d}", 1) for n in range(700)]  # 2,800 parameters
        with store.engine.begin() as connection:
            returned = _ALLOCATE.execute(connection, rows)
        assert sorted(tuple(row) for row in returned) == sorted(rows)
    finally:
        store.close()


# --- a group against the same messages one by one ------------------------------------------


def _incomings() -> tuple[list[Incoming], list[Incoming]]:
    """What is stored before (C, D) and the group: A, B (A's subject), A again (a duplicate
    within the group), A's key with other content (a conflict within the group), C again (a
    duplicate of a stored key), D's key with other content (a conflict with the store), E
    (no deliveries)."""

    def made(raw: bytes, destinations: tuple[str, ...] = ("zeimu", "shuno")) -> Incoming:
        return Incoming.from_message(accepted(raw, destinations), retention)

    a = sample(seed=11)
    b = with_message_id(a, "b0000000-0000-4000-8000-000000000001")
    other = with_message_id(sample(seed=12), A_KEY)
    c, d = sample(seed=13), sample(seed=14)
    d_other = with_message_id(sample(seed=15), D_KEY)
    a, d = with_message_id(a, A_KEY), with_message_id(d, D_KEY)
    before = [made(c, ("kokuho",)), made(d)]
    group = [made(a), made(b), made(a), made(other), made(c, ("kokuho",)), made(d_other)]
    group.append(made(sample("AddresseeInquiry", seed=16), ()))
    return before, group


_TABLES = {
    "messages": "message_id, tenant, system, service, kind, subject, body, body_digest,"
    " received_at, expires_at",
    "idempotency_keys": "tenant, system, message_id, content_digest, created_at",
    "deliveries": "destination, tenant, subject_key, sequence, state, attempts, next_attempt_at",
    "subject_sequences": "tenant, destination, subject_key, last_sequence",
    "audit_records": "tenant, seq, at, event, message_id, actor, CAST(detail AS TEXT),"
    " prev_hash, hash",
    "audit_heads": "tenant, seq, hash",
}


def _contents(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with store.engine.connect() as connection:
        return {
            table: sorted(
                (tuple(row) for row in connection.exec_driver_sql(f"SELECT {cols} FROM {table}")),
                key=repr,
            )
            for table, cols in _TABLES.items()
        }


def _store(store: Store, incomings: list[Incoming], *, grouped: bool) -> list[StoreOutcome]:
    if grouped:
        with store.engine.begin() as connection:
            return store_incomings(connection, incomings, now=NOW)
    outcomes = []
    for incoming in incomings:
        with store.engine.begin() as connection:
            outcomes.extend(store_incomings(connection, [incoming], now=NOW))
    return outcomes


def test_a_group_stores_what_one_by_one_stores(two_stores: tuple[Store, Store]) -> None:
    before, group = _incomings()
    grouped, alone = two_stores
    runs = []
    for store, together in ((grouped, True), (alone, False)):
        _store(store, before, grouped=False)
        runs.append(_store(store, group, grouped=together))
    assert runs[0] == runs[1]
    a, b, a_again, a_other, c_again, d_other, e = runs[0]
    assert a.ack is not None and not a.ack.duplicate and b.ack is not None
    assert [n + 1 for n in a.sequences] == list(b.sequences)  # one subject: A, then B
    assert a_again.ack is not None and a_again.ack.duplicate
    assert a_again.ack.destinations == ("zeimu", "shuno")
    assert a_other.conflict and d_other.conflict
    assert c_again.ack is not None and c_again.ack.duplicate
    assert c_again.ack.destinations == ("kokuho",) and c_again.ack.stored_at == NOW
    assert e.ack is not None and e.ack.destinations == () and e.sequences == ()
    contents = _contents(grouped)
    assert contents == _contents(alone)
    events = [row[3] for row in sorted(contents["audit_records"], key=lambda row: row[1])]
    assert events == ["stored"] * 2 + ["stored", "stored", "duplicate", "duplicate", "stored"]
    assert len(contents["messages"]) == 5 and len(contents["deliveries"]) == 1 + 2 + 2 + 2
    with grouped.sessions() as session:
        assert verify_chain(session, group[0].tenant).ok


def test_grouped_audit_appends_verify(store_settings: Settings) -> None:
    """Several tenants' records in one append, after single appends: every chain verifies."""
    store = open_store(store_settings)
    try:
        entries = [
            AuditEntry(tenant, "delivered", f"m-{n}", {"n": n}, "zeimu", NOW)
            for n, tenant in enumerate(["412066", "414247", "412066", "412066", "414247"])
        ]
        with store.engine.begin() as connection:
            append_audits_on(connection, entries[:1])
            written = append_audits_on(connection, entries[1:])
        assert [(w["tenant"], w["seq"]) for w in written] == [
            ("414247", 1),
            ("412066", 2),
            ("412066", 3),
            ("414247", 2),
        ]
        with store.sessions() as session:
            assert verify_chain(session, "412066").ok and verify_chain(session, "414247").ok
    finally:
        store.close()
