"""A PostgreSQL lock wait that ran out (another session holds a lock on a table the hub needs
for longer than ``RENKEI_DATABASE_LOCK_TIMEOUT``) is told as such — RK-OPS016, find that
session in pg_stat_activity — not as RK-OPS001 "the database cannot be reached", which sends
the operator to check the network. A real second session holds ``LOCK TABLE … IN ACCESS
EXCLUSIVE MODE`` on a scratch database; real ``renkei`` and ``renkei serve`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.hub_server import hub_server
from tests.test_qa_scaleout_services import _log_events
from tests.test_qa_storeoutage_services import post_rest

RENKEI = str(Path(sys.executable).with_name("renkei"))

pytestmark = [pytest.mark.services, pytest.mark.postgres]


def _renkei(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_DATABASE_URL": url,
        "RENKEI_DATABASE_LOCK_TIMEOUT": "0.5",
    }
    return subprocess.run(
        [RENKEI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_command_behind_a_table_locked_by_another_session_says_so(
    postgres_url: str, tmp_path: Path
) -> None:
    assert _renkei(tmp_path, postgres_url, "messages", "list").returncode == 0
    holder = create_engine(postgres_url)
    with holder.connect() as locking:
        locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        done = _renkei(tmp_path, postgres_url, "messages", "list")
        locking.rollback()
    holder.dispose()
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("RK-OPS016 "), done.stderr
    assert "pg_stat_activity" in done.stderr and "LockNotAvailable" in done.stderr
    assert "RK-OPS001" not in done.stderr and "Traceback" not in done.stderr


def test_the_hub_behind_a_table_locked_by_another_session_logs_it_once_as_a_lock(
    postgres_url: str, tmp_path: Path
) -> None:
    """Messages are refused 503 RK-STO008 meanwhile (the sender resends); the one warning of
    the episode names the lock, and the first message stored afterwards clears it."""
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url, "RENKEI_DATABASE_LOCK_TIMEOUT": "0.5"}
    holder = create_engine(postgres_url)
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, serve_options=(), env=env, stderr=stderr) as hub,
        httpx.Client(timeout=30) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        with holder.connect() as locking:
            locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            refused = [post_rest(client, hub) for _ in range(2)]
            locking.rollback()
        assert [r.status_code for r in refused] == [503, 503]
        assert {r.json()["findings"][0]["code"] for r in refused} == {"RK-STO008"}
        assert post_rest(client, hub).status_code == 202
    holder.dispose()
    told = [str(e.get("event")) for e in _log_events(log)]
    locked = [e for e in told if e.startswith("RK-OPS016 the message store is locked")]
    assert len(locked) == 1 and "pg_stat_activity" in locked[0], told
    assert sum(e.startswith("RK-OPS016 cleared") for e in told) == 1, told
    assert not [e for e in told if e.startswith("RK-OPS001")], told
