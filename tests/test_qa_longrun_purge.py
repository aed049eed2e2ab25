"""``renkei purge`` of a large embedded store beside a hub that keeps reading: the purge must
not grow SQLite's write-ahead log by every batch it writes.

Measured with a real ``renkei serve`` taking ~20 messages/s while ``renkei purge`` removed
50,000 messages (150,000 deliveries) of a 250 MB store: the log reached 437 MB — the room a
purge is run to free on a full disk — because batches written back to back never found the
log free of the hub's readers. Here the hub's readers are two threads reading in short
transactions on their own connections, as the dispatch workers and the ingest do.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from bus.settings import Settings
from bus.store.db import open_store
from bus.store.retention import purge
from tests.support.expired import insert_expired

MESSAGES = 3_000
BATCH = 100
#: 30 batches appended one after the other made a log of 4.3-4.9 MB; a log that starts
#: again from its beginning between them stayed at 0.35-0.66 MB.
BOUND = 1_500_000


def _fill(directory: Path) -> None:
    store = open_store(Settings(data_dir=directory))
    try:
        with store.sessions.begin() as session:
            insert_expired(
                session,
                MESSAGES,
                body=lambda _: bytes(200),
                destinations=("zeimu", "kokuho", "shuno"),
                received=datetime(2020, 1, 1, tzinfo=UTC),
            )
    finally:
        store.close()


def test_purge_lets_the_log_start_again_between_batches(tmp_path: Path) -> None:
    _fill(tmp_path)
    database, wal = tmp_path / "renkei.db", tmp_path / "renkei.db-wal"
    stop = threading.Event()
    largest = [0]

    def read() -> None:  # a hub's short read transactions, never all finished at once
        connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        try:
            while not stop.is_set():
                connection.execute("BEGIN")
                connection.execute("SELECT count(*) FROM deliveries").fetchone()
                connection.execute("COMMIT")
                largest[0] = max(largest[0], wal.stat().st_size if wal.exists() else 0)
        finally:
            connection.close()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    store = open_store(Settings(data_dir=tmp_path))
    try:
        report = purge(store.sessions, batch=BATCH)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        store.close()
    assert report.messages == MESSAGES
    assert largest[0] < BOUND, f"the log grew to {largest[0]:,} bytes during the purge"
