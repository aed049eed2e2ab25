"""Store outages, second round: what the hub and its CLI do while PostgreSQL does not answer
or a table is locked elsewhere. Real ``renkei serve`` and ``renkei`` processes, real HTTP, a
scratch database of the test's own (only it refuses connections, only its sessions are
terminated); a listening socket that never answers stands for a host whose packets are
dropped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from bus.hub import Hub
from bus.settings import Settings
from bus.store.db import create_store_engine
from bus.store.write_health import is_store_unavailable
from tests.support.hub_server import hub_server, serialize
from tests.support.towns import message
from tests.test_qa_scaleout_services import _log_events
from tests.test_qa_storeoutage_services import database_outage, post_rest

RENKEI = str(Path(sys.executable).with_name("renkei"))


def _renkei(
    tmp_path: Path, url: str, *args: str, lock_timeout: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_DATABASE_URL": url,
        "RENKEI_DATABASE_LOCK_TIMEOUT": lock_timeout,
    }
    return subprocess.run(
        [RENKEI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.services
@pytest.mark.postgres
@pytest.mark.slow
def test_an_outage_logs_no_traceback_per_batch(postgres_url: str, tmp_path: Path) -> None:
    """Each message refused during an outage also logged "a batch of 1 messages failed" with
    the driver's whole traceback in the JSON line's ``exception``, beside the one RK-OPS001
    warning for the outage. Now one short line per batch, without a traceback."""
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url}
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, serve_options=(), env=env, stderr=stderr) as hub,
        httpx.Client(timeout=30) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        with database_outage(postgres_url):
            time.sleep(1.5)  # past the configuration's 1 s poll
            refused = [post_rest(client, hub) for _ in range(3)]
        assert [r.status_code for r in refused] == [503, 503, 503]
    events = _log_events(log)
    batches = [e for e in events if str(e.get("event")).startswith("a batch of")]
    assert batches, "each refused batch is still named in the log"
    assert not [e for e in batches if "exception" in e or e.get("level") == "warning"]
    assert not [e for e in events if "Traceback" in str(e.get("event")) or "exception" in e]


@pytest.mark.services
@pytest.mark.postgres
@pytest.mark.slow
def test_a_locked_table_refuses_after_one_lock_wait(postgres_url: str, tmp_path: Path) -> None:
    """Behind a table locked elsewhere, a message waited for the lock in its batch's
    transaction and then again alone: its 503 came after twice RENKEI_DATABASE_LOCK_TIMEOUT.
    Now after one."""
    env = {"RENKEI_DATABASE_URL": postgres_url, "RENKEI_DATABASE_LOCK_TIMEOUT": "2"}
    holder = create_engine(postgres_url)
    with (
        hub_server(tmp_path, serve_options=(), env=env) as hub,
        httpx.Client(timeout=30) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        with holder.connect() as locking:
            locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            rest = post_rest(client, hub)
            took = time.monotonic() - started
            locking.rollback()
        assert rest.status_code == 503 and rest.json()["findings"][0]["code"] == "RK-STO008"
        assert 1.9 < took < 3.5, f"refused after {took:.1f} s behind a 2 s lock timeout"
        assert post_rest(client, hub).status_code == 202
    holder.dispose()


@pytest.mark.services
@pytest.mark.postgres
def test_a_failed_group_commit_is_not_retried_lock_wait_by_lock_wait(
    postgres_url: str, tmp_path: Path
) -> None:
    """Messages grouped into one commit (pipeline callers arriving together) behind a locked
    table: the group's transaction waited the lock timeout, then each message waited it
    again, one after the other. Now every message of the group fails at once with the
    store's error (the adapters answer RK-STO008)."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, database_lock_timeout=1.5
    )
    hub = Hub.open(settings)
    holder = create_engine(postgres_url)
    errors: list[Exception] = []
    documents = [serialize(message("NhiEligibilityNotice", "412066", "kokuho")) for _ in range(4)]

    def ingest(raw: bytes) -> None:
        try:
            hub.ingest(raw, adapter="test", source_address="127.0.0.1")
        except Exception as error:
            errors.append(error)

    try:
        with holder.connect() as locking:
            locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            threads = [threading.Thread(target=ingest, args=(raw,)) for raw in documents]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            took = time.monotonic() - started
            locking.rollback()
    finally:
        holder.dispose()
        hub.close()
    assert len(errors) == 4 and all(is_store_unavailable(e) for e in errors), errors
    # a group of one, then the three that queued meanwhile: two lock waits, not five
    assert took < 4.5, f"four refusals took {took:.1f} s behind a 1.5 s lock timeout"


@pytest.mark.services
@pytest.mark.postgres
@pytest.mark.slow
def test_purge_waits_for_a_lock_held_longer_than_the_hubs_bound(
    postgres_url: str, tmp_path: Path
) -> None:
    """``renkei purge`` behind a table locked for longer than RENKEI_DATABASE_LOCK_TIMEOUT
    stopped with a rich ``LockNotAvailable`` traceback (exit 1). An operator's maintenance
    job has no sender waiting for it: it now waits for the lock, as before the bound, and
    purges."""
    assert _renkei(tmp_path, postgres_url, "purge", lock_timeout="0.5").returncode == 0
    holder = create_engine(postgres_url)
    with holder.connect() as locking:
        locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        release = threading.Timer(3, locking.rollback)
        release.start()
        started = time.monotonic()
        done = _renkei(tmp_path, postgres_url, "purge", "--json", lock_timeout="0.5")
        took = time.monotonic() - started
        release.join()
    holder.dispose()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"messages": 0, "deliveries": 0}
    assert took >= 2.5


@pytest.mark.services
@pytest.mark.postgres
def test_a_cli_command_meeting_an_unreachable_store_prints_a_coded_error(
    postgres_url: str, tmp_path: Path
) -> None:
    """``renkei messages list`` behind a table locked past the lock bound ended in a rich
    traceback of ``LockNotAvailable`` (exit 1). Now one coded line, exit 2, like a store that
    cannot be opened: RK-OPS016 (another session holds a lock), not RK-OPS001 (the database
    cannot be reached), which sent the operator to check the network."""
    assert _renkei(tmp_path, postgres_url, "messages", "list", lock_timeout="0.5").returncode == 0
    holder = create_engine(postgres_url)
    with holder.connect() as locking:
        locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        done = _renkei(tmp_path, postgres_url, "messages", "list", lock_timeout="0.5")
        locking.rollback()
    holder.dispose()
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("RK-OPS016 "), done.stderr
    assert "LockNotAvailable" in done.stderr
    assert "Traceback" not in done.stderr and "╭" not in done.stderr


def test_a_postgresql_host_that_never_answers_fails_the_connection_in_time(
    tmp_path: Path,
) -> None:
    """No connect timeout: a PostgreSQL host whose packets are dropped (here: a socket that
    takes the connection and never answers) held every new connection, an ingest's or
    /readyz's, for ever. Now libpq gives up after 5 s with an error the hub answers
    RK-STO008 (retry later)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/renkei"
    engine = create_store_engine(Settings(data_dir=tmp_path, database_url=url))
    failed: list[Exception] = []

    def connect() -> None:
        try:
            engine.connect().close()
        except Exception as error:
            failed.append(error)

    connecting = threading.Thread(target=connect, daemon=True)
    started = time.monotonic()
    connecting.start()
    connecting.join(15)
    took = time.monotonic() - started
    silent.close()
    connecting.join(5)
    engine.dispose()
    assert failed and took < 10, f"still connecting after {took:.0f} s"
    assert is_store_unavailable(failed[0])
