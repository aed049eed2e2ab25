"""The scale-out layout (PostgreSQL + RabbitMQ) when its services misbehave: a broker that
accepts connections but never answers, a database that drops the hub's connections, and a
database that is not (or not yet) this renkei's store. Real processes, real HTTP, the real
PostgreSQL; the broker that hangs is a real TCP listener that never speaks AMQP (the shared
RabbitMQ cannot be made to hang without disturbing everyone else on it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from bus.catalogue import NS_ENVELOPE
from bus.settings import Settings
from bus.store.db import SCHEMA_HEAD, Store, StoreOpenError, open_store
from tests.support.hub_server import hub_server, sample, serialize
from tests.support.juki_config import write_juki_config
from tests.support.postgres import POSTGRES_ADMIN_URL
from tests.support.receivers import Receiver, free_port, receiver_factory, wait_for
from tests.test_dispatch import TENANT, add_message

ROOT = Path(__file__).resolve().parent.parent
RENKEI = str(Path(sys.executable).parent / "renkei")

receivers = pytest.fixture(receiver_factory, name="receivers")


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """An ``amqp://`` URL whose listener accepts connections and never answers (a broker
    hung by its memory alarm, or a firewall that lets the handshake start)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}//"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


def _state(store: Store, delivery: int) -> str | None:
    with store.sessions() as session:
        state: str | None = session.scalar(
            text("SELECT state FROM deliveries WHERE id = :id"), {"id": delivery}
        )
        return state


def _log_events(path: Path) -> list[dict[str, object]]:
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": line})  # a plain line (a traceback's) is kept as one
    return events


# --- a broker that hangs must not hold up the acknowledgements ---------------------------


@pytest.mark.services
@pytest.mark.postgres
@pytest.mark.slow
def test_a_hung_broker_does_not_hold_up_acknowledgements(
    postgres_url: str, silent_broker: str, tmp_path: Path
) -> None:
    """Each commit's wake-up was published on the ingest's own thread: a broker that never
    answered held every grouped commit for the 2 s connect timeout (20 notifications took
    21 s instead of 0.2 s) and logged one warning per message. Wake-ups are hints: the
    messages are acknowledged at once, delivered by the workers' poll, and the broker's
    failure is logged once, coded."""
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url, "RENKEI_BROKER_URL": silent_broker}
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, serve_options=(), env=env, stderr=stderr) as hub,
    ):
        sent = []
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            for _ in range(6):
                document = sample("ResidentChangeNotice")
                answer = client.post(
                    f"{hub.url}/api/v1/messages/ResidentChangeNotice",
                    content=serialize(document),
                    headers={"Content-Type": "application/xml"},
                )
                assert answer.status_code == 202, answer.text
                sent.append(document.findtext(f".//{{{NS_ENVELOPE}}}messageId"))
        took = time.monotonic() - started
        wait_for(lambda: set(sent) <= set(hub.receiver.applied()), timeout=30)
    assert took < 4, f"6 acknowledgements took {took:.1f} s behind a hung broker"
    events = [str(e.get("event")) for e in _log_events(log)]
    assert sum(e.startswith("RK-OPS002 wake-ups cannot be published") for e in events) == 1
    assert not [e for e in events if "wake-up not published" in e]


# --- a database that drops the workers' connections ----------------------------------------


def _database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _admin(statement: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def _worker_config(tmp_path: Path, receiver: Receiver) -> Path:
    return write_juki_config(tmp_path / "config", receiver.url, TENANT)


@pytest.mark.services
@pytest.mark.postgres
@pytest.mark.slow
def test_a_worker_reports_a_database_outage_once_and_recovers_by_itself(
    postgres_url: str,
    rabbitmq_url: str,
    receivers: Callable[[str], Receiver],
    tmp_path: Path,
) -> None:
    """The hub's connections terminated and refused for a few seconds: each worker logged
    a full traceback (``worker.round_failed``) every poll while it lasted. Now one coded
    line when it starts and one when the worker works again, and nothing is lost."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, broker_url=rabbitmq_url
    )
    store = open_store(settings)
    receiver = receivers("juki").start()
    env = {
        **os.environ,
        "RENKEI_DATABASE_URL": postgres_url,
        "RENKEI_BROKER_URL": rabbitmq_url,
        "RENKEI_CONFIG_DIR": str(_worker_config(tmp_path, receiver)),
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "worker.log"
    database = _database_name(postgres_url)
    first, (first_delivery,) = add_message(store.sessions, "S1", ("juki",))
    with log.open("wb") as stderr:
        worker = subprocess.Popen(
            [RENKEI, "worker", "--concurrency", "2"], env=env, cwd=ROOT, stderr=stderr
        )
        try:
            wait_for(lambda: first in receiver.applied(), timeout=30)
            # and recorded: an outage between the send and its record leaves the delivery
            # leased (30 s), and the second message of its subject waits behind it — CI
            # lost that race once on a slow machine (recovered after 25.8 s)
            wait_for(lambda: _state(store, first_delivery) == "delivered", timeout=30)
            _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            _admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}'"
            )
            time.sleep(4)  # the workers' rounds fail meanwhile
            _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            store.engine.dispose()  # its pooled connections were terminated too
            second = add_message(store.sessions, "S1", ("juki",))[0]
            recovered = wait_for(lambda: second in receiver.applied(), timeout=30)
        finally:
            _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            worker.terminate()
            worker.wait(15)
            store.close()
    assert recovered < 10
    events = _log_events(log)
    names = [str(e.get("event")) for e in events]
    unavailable = [e for e in events if e.get("event") == "worker.database_unavailable"]
    assert unavailable and len(unavailable) <= 2  # one per worker at most
    assert all(e.get("code") == "RK-OPS001" and e.get("level") == "warning" for e in unavailable)
    assert "worker.database_available" in names
    assert "worker.round_failed" not in names
    assert not [e for e in events if "exception" in e or "Traceback" in str(e.get("event"))]
    assert sorted(receiver.applied()) == sorted([first, second])


# --- a database that is not this renkei's store --------------------------------------------


def _cli(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RENKEI_DATABASE_URL": database_url, "RENKEI_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [RENKEI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _flat(output: str) -> str:
    """The CLI's error panel as one line of text (its border and wrapping removed)."""
    return " ".join(output.replace("│", " ").split())


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(inspect(connection).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.services
@pytest.mark.postgres
def test_a_foreign_database_is_refused_and_left_as_it_was(
    postgres_url: str, tmp_path: Path
) -> None:
    """RENKEI_DATABASE_URL pointing at another application's database: renkei began
    creating its tables there and stopped on the first name taken, with a 358-line
    traceback (and would have filled a database without such a name with its tables)."""
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id integer PRIMARY KEY, name text)"))
        connection.execute(text("CREATE TABLE messages (id integer PRIMARY KEY, body text)"))
    engine.dispose()
    result = _cli(postgres_url, tmp_path, "config", "show")
    assert result.returncode == 2, result.stderr
    assert "RK-OPS008" in result.stderr
    assert "This database is not a renkei message store" in _flat(result.stderr)
    assert "Traceback" not in result.stderr and "DuplicateTable" not in result.stderr
    assert _tables(postgres_url) == ["customers", "messages"]
    with pytest.raises(StoreOpenError) as refused:
        open_store(Settings(data_dir=tmp_path, database_url=postgres_url))
    assert refused.value.finding.code == "RK-OPS008"


@pytest.mark.services
@pytest.mark.postgres
def test_a_store_of_a_newer_renkei_is_refused_unchanged(postgres_url: str, tmp_path: Path) -> None:
    """A worker host not yet upgraded, started against a store a newer renkei migrated:
    Alembic's "Can't locate revision" under a 274-line traceback."""
    open_store(Settings(data_dir=tmp_path, database_url=postgres_url)).close()
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    result = _cli(postgres_url, tmp_path, "worker")
    assert result.returncode == 2, result.stderr
    flat = _flat(result.stderr)
    assert "RK-OPS009" in flat and "0099_future" in flat and SCHEMA_HEAD in flat
    assert "Traceback" not in result.stderr
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0099_future"
    engine.dispose()


def test_an_unreachable_database_is_a_coded_refusal(tmp_path: Path) -> None:
    """No server at the URL's address: a coded RK-OPS001 with the reason, exit 2, instead of
    the driver's traceback (the URL is shown without its password)."""
    url = f"postgresql+psycopg://renkei:s3cret@127.0.0.1:{free_port()}/renkei"
    result = _cli(url, tmp_path, "worker")
    assert result.returncode == 2, result.stderr
    flat = _flat(result.stderr)
    assert "RK-OPS001" in flat and "Connection refused" in flat
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
