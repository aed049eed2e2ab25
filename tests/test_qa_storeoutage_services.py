"""The hub while its PostgreSQL store is briefly unavailable or slow: connections terminated
and refused for a few seconds, or a table locked from another session. Real ``renkei serve``
processes, real HTTP, the real PostgreSQL (a scratch database of the test's own: only its
connections are terminated, only it stops accepting connections)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from lxml import etree
from sqlalchemy import create_engine, text

from bus.settings import Settings
from bus.store.db import _PG_MIGRATION_LOCK, SCHEMA_HEAD, create_store_engine, open_store
from bus.store.db import schema_version as stored_schema
from tests.support.folders import folder_config, inbound_folder, nhi_file, report_of
from tests.support.hub_server import HubServer, hub_server, sample, serialize, soap_envelope
from tests.support.receivers import wait_for
from tests.test_qa_scaleout_services import _admin, _database_name, _log_events

pytestmark = [pytest.mark.services, pytest.mark.postgres]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
STORE_DOWN = "RK-OPS001 the message store cannot be reached"
STORE_BACK = "RK-OPS001 cleared: the message store took a message again"
STORE_LOCKED = "RK-OPS016 the message store is locked by another database session"
STORE_UNLOCKED = "RK-OPS016 cleared: the message store took a message again"


@contextmanager
def database_outage(url: str) -> Iterator[None]:
    """The scratch database refuses new connections and its open ones are terminated."""
    name = _database_name(url)
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        yield
    finally:
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def post_rest(client: httpx.Client, hub: HubServer) -> httpx.Response:
    return client.post(
        f"{hub.url}/api/v1/messages/ResidentChangeNotice",
        content=serialize(sample("ResidentChangeNotice")),
        headers={"Content-Type": "application/xml"},
    )


def post_soap(client: httpx.Client, hub: HubServer) -> httpx.Response:
    return client.post(
        f"{hub.url}/soap/ResidentChangeNotice",
        content=soap_envelope(sample("ResidentChangeNotice")),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
    )


def assert_retry_later(rest: httpx.Response, soap: httpx.Response) -> None:
    """REST 503 problem+json and SOAP 503 Server fault, both RK-STO008 with Retry-After."""
    assert rest.status_code == 503, rest.text
    assert rest.headers["content-type"] == "application/problem+json"
    assert rest.headers["retry-after"] == "30"
    assert [f["code"] for f in rest.json()["findings"]] == ["RK-STO008"]
    assert soap.status_code == 503, soap.text
    assert soap.headers["retry-after"] == "30"
    fault = etree.fromstring(soap.content).find(f".//{{{SOAP_NS}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode") == "soap:Server"
    assert (fault.findtext("faultstring") or "").startswith("RK-STO008 ")


def events_of(log: Path) -> list[str]:
    return [str(event.get("event")) for event in _log_events(log)]


def test_ingest_during_a_database_outage_is_refused_retry_later_and_logged_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Connections terminated and refused: every REST and SOAP message was answered 500
    RK-API003 "internal error" with a traceback per request, and /readyz said RK-OPS003 "no
    configuration is loaded" although it was in memory. Now 503 + Retry-After with
    RK-STO008 (a soap:Server fault for SOAP), one coded warning for the outage and one when a
    message is stored again; /readyz names the database and keeps the configuration."""
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
            rests = [post_rest(client, hub) for _ in range(3)]
            soap = post_soap(client, hub)
            ready = client.get(f"{hub.url}/readyz")
        for rest in rests:
            assert_retry_later(rest, soap)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"]["finding"]["code"] == "RK-OPS001"
        assert checks["configuration"] == {"ok": True}
        wait_for(lambda: post_rest(client, hub).status_code == 202, timeout=30)
        wait_for(lambda: client.get(f"{hub.url}/readyz").status_code == 200, timeout=30)
    events = events_of(log)
    assert sum(event.startswith(STORE_DOWN) for event in events) == 1
    assert sum(event.startswith(STORE_BACK) for event in events) == 1
    assert not [e for e in events if "inbound request failed" in e or "RK-API003" in e]


def test_a_table_locked_elsewhere_refuses_the_ingest_instead_of_hanging(
    postgres_url: str, tmp_path: Path
) -> None:
    """``LOCK TABLE messages`` held from psql: each ingest hung for as long as the lock was
    held (the clients timed out) and nothing was logged. The hub's connections now wait at
    most RENKEI_DATABASE_LOCK_TIMEOUT: the message is refused 503 RK-STO008 (resend later),
    logged once, and taken as soon as the lock is gone."""
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url, "RENKEI_DATABASE_LOCK_TIMEOUT": "0.5"}
    holder = create_engine(postgres_url)
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, serve_options=(), env=env, stderr=stderr) as hub,
        httpx.Client(timeout=20) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        with holder.connect() as locking:
            locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            rest = post_rest(client, hub)
            soap = post_soap(client, hub)
            took = time.monotonic() - started
            locking.rollback()  # the lock is released
        assert_retry_later(rest, soap)
        assert took < 6, f"two refusals took {took:.1f} s behind a 0.5 s lock timeout"
        assert post_rest(client, hub).status_code == 202
    holder.dispose()
    events = events_of(log)
    down = [event for event in events if event.startswith(STORE_LOCKED)]
    assert len(down) == 1 and "lock timeout" in down[0], events
    assert sum(event.startswith(STORE_UNLOCKED) for event in events) == 1


@pytest.mark.slow
def test_migrations_wait_for_their_locks_without_the_hubs_bound(
    postgres_url: str, tmp_path: Path
) -> None:
    """The hub's connections carry the lock bound; a migration waiting behind another
    process's migration (its advisory lock) does not: it waits and then migrates. 0 turns
    the bound off."""
    settings = Settings(data_dir=tmp_path, database_url=postgres_url, database_lock_timeout=0.5)
    holder = create_engine(postgres_url)
    migrating = holder.connect()
    migrating.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})

    def finish_migrating() -> None:
        time.sleep(2)
        migrating.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
        migrating.close()

    other = threading.Thread(target=finish_migrating)
    other.start()
    started = time.monotonic()
    store = open_store(settings)
    waited = time.monotonic() - started
    other.join()
    holder.dispose()
    try:
        assert waited >= 1.5
        assert stored_schema(store.engine) == SCHEMA_HEAD
        with store.engine.connect() as connection:
            assert connection.scalar(text("SHOW lock_timeout")) == "500ms"
    finally:
        store.close()
    unbounded = create_store_engine(settings.model_copy(update={"database_lock_timeout": 0}))
    with unbounded.connect() as connection:
        assert connection.scalar(text("SHOW lock_timeout")) == "0"
    unbounded.dispose()


@pytest.mark.hotfolder
@pytest.mark.slow
def test_the_folder_watcher_survives_a_database_outage_and_resumes(
    postgres_url: str, tmp_path: Path
) -> None:
    """The watcher's thread read the configuration outside its try block: the first poll
    during an outage killed it ("Exception in thread folder-watcher", a plain traceback) and
    hot folders stayed unwatched until a restart. Now one coded line, and a file delivered
    during the outage is stored once the database answers."""
    inbox = tmp_path / "in" / "kokuho"
    config = folder_config(tmp_path, inbound_folder(inbox, poll_interval="PT0.2S"))
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url}
    with (
        log.open("wb") as stderr,
        hub_server(
            tmp_path, config_source=config, serve_options=(), env=env, stderr=stderr
        ) as _hub,
    ):
        wait_for(lambda: (inbox / "done").is_dir())
        with database_outage(postgres_url):
            time.sleep(1.5)  # several passes, past the configuration's poll
            (inbox / "NHI009.dat").write_bytes(nhi_file(2))
            (inbox / "NHI009.dat.end").write_bytes(b"")
            time.sleep(1.5)  # the file is taken and fails on the store
        wait_for(lambda: Path(f"{inbox}/done/NHI009.dat.report.json").exists(), timeout=30)
    assert report_of(inbox / "done" / "NHI009.dat")["stored"] == 2
    events = events_of(log)
    assert not [e for e in events if "Exception in thread" in e]
    watcher = [e for e in events if e.startswith("RK-OPS001") and "Hot-folder files wait" in e]
    assert len(watcher) == 1
    assert "RK-OPS001 cleared: the hot folders reach the message store again" in events
