"""Years of operation on the embedded store: the SQLite write-ahead log must not keep the size
of its largest burst for as long as the hub runs.

SQLite reuses its WAL file from the start once a checkpoint has copied every frame back and no
reader still needs them, but never makes the file smaller unless ``journal_size_limit`` says
so. A burst written while readers pin the log (a big ``renkei purge`` beside a hub taking
messages: 189 MB of WAL beside a 250 MB store, measured) otherwise stays on disk until the
last connection closes, i.e. until the hub is restarted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from bus.settings import Settings
from bus.store.db import SQLITE_WAL_SIZE_LIMIT, open_store

_CHUNK = 1 << 20  # one MiB of random bytes a row


def _wal(directory: Path) -> int:
    path = directory / "renkei.db-wal"
    return path.stat().st_size if path.exists() else 0


def test_wal_is_cut_back_after_a_burst_that_readers_pinned(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path))
    reader = sqlite3.connect(tmp_path / "renkei.db", isolation_level=None)
    try:
        with store.sessions.begin() as session:
            session.execute(text("CREATE TABLE qa_pad (x BLOB)"))
        # a reader's snapshot (a hub's read in progress) keeps every later frame in the log
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()
        burst = SQLITE_WAL_SIZE_LIMIT * 3 // 2 // _CHUNK
        for _ in range(burst // 8):
            with store.sessions.begin() as session:
                session.execute(
                    text(
                        f"INSERT INTO qa_pad SELECT randomblob({_CHUNK}) FROM ("
                        "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL "
                        "SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL "
                        "SELECT 7 UNION ALL SELECT 8)"
                    )
                )
        assert _wal(tmp_path) > SQLITE_WAL_SIZE_LIMIT  # the burst is in the log
        reader.execute("COMMIT")
        # the hub goes on: its commits checkpoint, and the log starts again from its beginning
        for _ in range(3):
            with store.sessions.begin() as session:
                session.execute(
                    text("DELETE FROM qa_pad WHERE rowid IN (SELECT rowid FROM qa_pad LIMIT 1)")
                )
        assert _wal(tmp_path) <= SQLITE_WAL_SIZE_LIMIT
    finally:
        reader.close()
        store.close()
