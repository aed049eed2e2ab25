"""QA: the running hub whose SQLite store another process holds locked (an old hub during an
upgrade, a ``sqlite3`` shell left in ``BEGIN EXCLUSIVE``) says so — RK-OPS013, stop that
process — in its warnings and in ``/readyz``, as the CLI does
(tests/test_qa_store_locked_message.py), not RK-OPS001 "the database cannot be reached"; and
it recovers by itself once the lock is released.

A real ``renkei serve`` on a real socket and store file, locked from this process. SQLite's
busy timeout (``SQLITE_BUSY_TIMEOUT_MS``, 30 s) has no setting, so a ``sitecustomize`` on the
hub's ``PYTHONPATH`` sets the module's constant to 1 s before ``renkei`` runs: the same code,
a shorter wait."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx

from tests.support.hub_server import hub_server
from tests.support.receivers import wait_for
from tests.test_qa_scaleout_services import _log_events
from tests.test_qa_storeoutage_services import post_rest

SHORT_WAIT = "import bus.store.db as db\ndb.SQLITE_BUSY_TIMEOUT_MS = 1000\n"


def test_a_running_hub_tells_a_locked_store_and_recovers_by_itself(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SHORT_WAIT, encoding="utf-8")
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    log = tmp_path / "serve.log"
    with (
        log.open("wb") as stderr,
        hub_server(
            tmp_path, serve_options=(), env={"PYTHONPATH": os.pathsep.join(path)}, stderr=stderr
        ) as hub,
        httpx.Client(timeout=20) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        holder = sqlite3.connect(tmp_path / "hub-data" / "renkei.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            refused = [post_rest(client, hub) for _ in range(2)]
            ready = client.get(f"{hub.url}/readyz")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for rest in refused:
            assert rest.status_code == 503, rest.text
            assert [f["code"] for f in rest.json()["findings"]] == ["RK-STO008"]
        assert ready.status_code == 503, ready.text
        database = ready.json()["checks"]["database"]
        assert database["finding"]["code"] == "RK-OPS013", database
        assert "database is locked" in str(database["finding"])
        # released: ready again, and the next message is taken (and clears the outage)
        wait_for(lambda: client.get(f"{hub.url}/readyz").status_code == 200, timeout=5)
        assert post_rest(client, hub).status_code == 202
    events = _log_events(log)
    told = [str(e.get("event")) for e in events]
    assert sum(e.startswith("RK-OPS013 the message store is locked") for e in told) == 1, told
    assert sum(e.startswith("RK-OPS013 cleared: the message store") for e in told) == 1, told
    # the configuration poll and the dispatch worker, when a round of theirs met the lock
    assert sum(e.startswith("RK-OPS013 the configuration cannot be polled") for e in told) <= 1
    workers = [e for e in events if e.get("event") == "worker.database_unavailable"]
    assert all(e.get("code") == "RK-OPS013" for e in workers), workers
    assert len({e.get("worker") for e in workers}) == len(workers), workers  # once per worker
    assert not [e for e in told if "RK-OPS001" in e or "RK-API003" in e], told
    assert all(e.get("code") != "RK-OPS001" for e in events), events
