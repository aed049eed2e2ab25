"""``read_snapshot``: a long read (a town's export) sees one moment of the store and holds no
writer back. Every other SQLite transaction begins IMMEDIATE, taking the one write lock: an
export read that way stalled every ingest and claim of the other towns for its length."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN, record_admin_action
from bus.store.db import Store, open_store, read_snapshot
from bus.store.models import AuditRecord


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened = open_store(Settings(data_dir=tmp_path / "data", database_url=url))
    try:
        yield opened
    finally:
        opened.close()


def _admin_records(session: Session) -> int:
    query = select(func.count()).select_from(AuditRecord).where(AuditRecord.tenant == ADMIN_CHAIN)
    return session.scalar(query) or 0


def _write_lock_free(store: Store) -> bool:
    """Whether another connection could take SQLite's write lock now (within 0.3 s)."""
    probe = sqlite3.connect(str(store.engine.url.database), timeout=0.3, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # database is locked
        return False
    finally:
        probe.close()


def test_a_snapshot_sees_one_moment_and_holds_no_writer_back(store: Store) -> None:
    sqlite = store.engine.dialect.name == "sqlite"
    with read_snapshot(store.sessions) as reading:
        before = _admin_records(reading)  # the first read fixes the snapshot
        if sqlite:
            assert _write_lock_free(store)
        with store.sessions.begin() as writing:  # another town's work goes on meanwhile
            record_admin_action(writing, "cli:test", "tenant.export", {"tenant": "412066"})
        assert _admin_records(reading) == before  # not seen: the snapshot's moment
    with store.sessions() as after:
        assert _admin_records(after) == before + 1
    if sqlite:  # what every other transaction does: the write lock from its BEGIN on
        with store.sessions() as ordinary:
            _admin_records(ordinary)
            assert not _write_lock_free(store)
