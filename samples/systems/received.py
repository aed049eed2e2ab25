"""What a sample system received, in its own SQLite file (queryable by tests and the demo).

Each system applies a messageId once (Idempotent Receiver): a resend is recorded with
``duplicate`` set, and a caller can tell from the answer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
    id INTEGER PRIMARY KEY,
    system TEXT NOT NULL,
    service TEXT NOT NULL,
    message_id TEXT NOT NULL,
    tenant TEXT,
    subject TEXT,
    duplicate INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    fields TEXT NOT NULL
)
"""
# the Idempotent Receiver's look-up on every message (without it, a scan of all received)
_INDEX = "CREATE INDEX IF NOT EXISTS received_by_message ON received (system, message_id)"


class ReceivedLog:
    def __init__(self, path: Path, system: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.system = system
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_INDEX)

    def record(
        self,
        service: str,
        message_id: str,
        *,
        tenant: str | None = None,
        subject: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> bool:
        """Store one received message; False when this messageId was applied before."""
        with self._lock:
            seen = self._db.execute(
                "SELECT 1 FROM received WHERE system = ? AND message_id = ? AND duplicate = 0",
                (self.system, message_id),
            ).fetchone()
            self._db.execute(
                "INSERT INTO received (system, service, message_id, tenant, subject, duplicate,"
                " received_at, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.system,
                    service,
                    message_id,
                    tenant,
                    subject,
                    int(seen is not None),
                    datetime.now(UTC).isoformat(),
                    json.dumps(fields or {}, ensure_ascii=False, default=str),
                ),
            )
            return seen is None

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(
                "SELECT system, service, message_id, tenant, subject, duplicate, received_at,"
                " fields FROM received WHERE system = ? ORDER BY id",
                (self.system,),
            )
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            row["duplicate"] = bool(row["duplicate"])
            row["fields"] = json.loads(row["fields"])
        return rows

    def close(self) -> None:
        with self._lock:
            self._db.close()
