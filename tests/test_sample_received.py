"""samples/systems/received.py: a sample system's Idempotent Receiver records each messageId
once, and finds it by index, not by reading everything it ever received."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from samples.systems.received import ReceivedLog


def test_a_resend_is_recorded_as_a_duplicate(tmp_path: Path) -> None:
    log = ReceivedLog(tmp_path / "juki-received.db", "juki")
    try:
        assert log.record("AddresseeInquiry", "m-1", tenant="412015") is True
        assert log.record("AddresseeInquiry", "m-2", tenant="412015") is True
        assert log.record("AddresseeInquiry", "m-1", tenant="412015") is False
        assert [row["duplicate"] for row in log.rows()] == [False, False, True]
    finally:
        log.close()


def test_the_look_up_uses_an_index(tmp_path: Path) -> None:
    path = tmp_path / "juki-received.db"
    ReceivedLog(path, "juki").close()
    with sqlite3.connect(path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM received"
            " WHERE system = ? AND message_id = ? AND duplicate = 0",
            ("juki", "m-1"),
        ).fetchall()
    assert any("USING INDEX received_by_message" in str(row[-1]) for row in plan), plan
