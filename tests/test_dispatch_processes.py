"""``renkei serve --dispatch-processes N``: the dispatch workers in processes of their own
(bus/dispatch/processes.py), woken across processes over the store's machine channel
(bus/dispatch/wakeup.py), restarted when they die, stopped with serve."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.dispatch import processes
from bus.dispatch.wakeup import Wakeups, machine_channel
from bus.settings import Settings
from tests.support.hub_server import HubServer, hub_server, sample, serialize
from tests.support.receivers import free_port, wait_for

REST = "/api/v1/messages"


def _settings(data_dir: Path, **overrides: str) -> Settings:
    return Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]


def test_the_machine_channel_is_the_database_files(tmp_path: Path) -> None:
    channel = machine_channel(_settings(tmp_path / "a"))
    assert channel is not None and channel.startswith("\0renkei-wakeups-")
    assert machine_channel(_settings(tmp_path / "a")) == channel
    assert machine_channel(_settings(tmp_path / "b")) != channel
    # a broker carries the wake-ups (between machines too)
    assert machine_channel(_settings(tmp_path / "a", broker_url="amqp://x")) is None
    postgres = _settings(tmp_path, database_url="postgresql+psycopg://h/db")
    assert machine_channel(postgres) not in (None, channel)
    with_broker = _settings(
        tmp_path, database_url="postgresql+psycopg://h/db", broker_url="amqp://x"
    )
    assert machine_channel(with_broker) is None


SEND = """
import sys
from pathlib import Path
from bus.dispatch.wakeup import Wakeups
from bus.settings import Settings
wakeups = Wakeups.for_settings(Settings(data_dir=Path(sys.argv[1])))
wakeups.notify(["kotei"])
wakeups.close()
"""


def _notify_from_another_process(data_dir: Path) -> None:
    """What a hub process, or a ``renkei import``, does after a commit on that store."""
    subprocess.run([sys.executable, "-c", SEND, str(data_dir)], check=True, timeout=60)


def test_a_notify_in_another_process_wakes_the_listening_one(tmp_path: Path) -> None:
    channel = machine_channel(_settings(tmp_path))
    assert channel is not None
    listener = Wakeups("memory://", channel)
    listener.start()
    try:
        listener.wait(0)  # catch up with the notifies of this process's earlier tests
        assert not listener.wait(0.2)  # nothing sent since
        _notify_from_another_process(tmp_path)
        assert listener.wait(10)
        assert not listener.wait(0.2)  # one notify, one wake-up
    finally:
        listener.close()
    # closed: the name is free again, and a notify to nobody is dropped without an error
    again = Wakeups("memory://", channel)
    again.start()
    again.close()
    _notify_from_another_process(tmp_path)


def _post_notice(hub: HubServer) -> tuple[str, int]:
    """(messageId, how many destinations it was routed to)."""
    document = sample("ResidentChangeNotice")
    response = httpx.post(
        f"{hub.url}{REST}/ResidentChangeNotice",
        content=serialize(document),
        headers={"Content-Type": "application/xml"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    acknowledgement = response.json()
    assert acknowledgement["destinations"]
    return acknowledgement["message_id"], len(acknowledgement["destinations"])


def _delivered(hub: HubServer, posted: tuple[str, int]) -> bool:
    message_id, destinations = posted
    return hub.receiver.applied().count(message_id) == destinations


def _dispatch_pids(serve: int) -> list[int]:
    """The serve process's children running ``renkei worker``."""
    found = subprocess.run(["pgrep", "-P", str(serve)], capture_output=True, text=True)
    pids = []
    for pid in map(int, found.stdout.split()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"worker" in command:
            pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """One ``renkei serve --dispatch-processes 1`` for the tests that only post to it (each
    waits for its one dispatch process: a test may have killed the previous one)."""
    tmp = tmp_path_factory.mktemp("dispatch-processes")
    with hub_server(tmp, serve_options=("--dispatch-processes", "1")) as server:
        yield server


def _data_dir(hub: HubServer) -> Path:
    return hub.config_dir.parent / "hub-data"  # tests/support/hub_server.py's layout


def _all_recorded(data_dir: Path) -> bool:
    """Every delivery recorded as delivered in the store (not only received: a worker killed
    between the send and its record leaves its claims to their 30 s lease, and a later
    message of the same subject waits behind them — correct, but not what is tested here)."""
    with sqlite3.connect(data_dir / "renkei.db") as connection:
        (open_deliveries,) = connection.execute(
            "SELECT count(*) FROM deliveries WHERE state != 'delivered'"
        ).fetchone()
    return int(open_deliveries) == 0


def _leased(data_dir: Path) -> int:
    """Deliveries claimed and not yet recorded (a worker holds their lease)."""
    with sqlite3.connect(data_dir / "renkei.db") as connection:
        (leased,) = connection.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'pending' AND lease_owner IS NOT NULL"
        ).fetchone()
    return int(leased)


def test_the_dispatch_process_delivers_and_is_restarted_when_killed(hub: HubServer) -> None:
    wait_for(lambda: len(_dispatch_pids(hub.process.pid)) == 1, timeout=30)
    [first] = _dispatch_pids(hub.process.pid)
    posted = _post_notice(hub)
    wait_for(lambda: _delivered(hub, posted), timeout=30)
    wait_for(lambda: _all_recorded(_data_dir(hub)), timeout=30)

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: _dispatch_pids(hub.process.pid) not in ([], [first]), timeout=30)
    after_restart = _post_notice(hub)
    wait_for(lambda: _delivered(hub, after_restart), timeout=30)
    wait_for(lambda: _all_recorded(_data_dir(hub)), timeout=30)  # nothing left for the next


def test_the_dispatch_process_wakes_on_a_commit_rather_than_its_poll(hub: HubServer) -> None:
    """The worker's poll is 1 s: deliveries right after each commit come from wake-ups over
    the machine channel (the HTTP process has no workers of its own)."""
    wait_for(lambda: len(_dispatch_pids(hub.process.pid)) == 1, timeout=30)
    warm = _post_notice(hub)  # the first delivery opens the connections
    wait_for(lambda: _delivered(hub, warm), timeout=30)
    latencies = []
    for _ in range(5):
        # idle: the worker is back waiting on its wake-ups; by its 1 s poll alone this post
        # would wait ~0.8 s (as after 1.2 s idle: the same phase of the poll, a second sooner)
        time.sleep(0.2)
        posted = _post_notice(hub)
        latencies.append(wait_for(lambda: _delivered(hub, posted), timeout=30))  # noqa: B023
    # by the poll alone, each would wait 0-1 s for the worker to look (0.5 s on average)
    assert sorted(latencies)[2] < 0.25, latencies


def test_serve_stops_its_dispatch_process_and_the_process_outlives_no_serve(
    tmp_path: Path,
) -> None:
    for stop in (signal.SIGTERM, signal.SIGKILL):
        with hub_server(tmp_path / stop.name, serve_options=("--dispatch-processes", "1")) as hub:
            wait_for(lambda: len(_dispatch_pids(hub.process.pid)) == 1, timeout=30)
            [dispatcher] = _dispatch_pids(hub.process.pid)
            os.kill(hub.process.pid, stop)
            hub.process.wait(timeout=30)
            # SIGTERM: serve stops it; SIGKILL: it notices its parent is gone (within ~1 s)
            wait_for(lambda: not _alive(dispatcher), timeout=15)  # noqa: B023


def test_no_dispatch_at_all_cannot_be_asked_for_with_dispatch_processes(tmp_path: Path) -> None:
    environment = os.environ | {
        "RENKEI_DATA_DIR": str(tmp_path),
        "RENKEI_DISPATCH_WORKERS": "0",
    }
    command = [sys.executable, "-c", "from bus.cli import app; app()", "serve"]
    result = subprocess.run(
        # on a port of its own: the port is checked first, and 8080 may be anyone's
        [*command, "--no-samples", "--dispatch-processes", "1", "--port", str(free_port())],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nothing would dispatch" in result.stderr


def test_the_supervisor_outlives_a_process_that_cannot_be_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart that fails to start (the interpreter gone mid-upgrade, say) is logged and
    tried again after the longer delay; the supervisor keeps going."""
    monkeypatch.setattr(processes, "RESTART_FIRST_SECONDS", 0.05)
    supervisor = processes.DispatchProcesses(1, 1)
    supervisor._command = [sys.executable, "-c", "raise SystemExit(3)"]  # exits at once
    supervisor.start()
    try:
        [exiting] = supervisor.pids()
        supervisor._command = [str(Path(sys.executable).with_name("no-such-interpreter"))]
        time.sleep(1.0)  # restarts fail meanwhile
        assert supervisor.pids() == [exiting]
        supervisor._command = [sys.executable, "-c", "import time; time.sleep(60)"]
        wait_for(lambda: supervisor.pids() != [exiting], timeout=30)
        [running] = supervisor.pids()
        assert _alive(running)
    finally:
        supervisor.stop(grace_seconds=5)
    assert not _alive(running)


def test_what_a_dead_dispatch_process_had_claimed_is_sent_again_without_waiting_for_its_lease(
    tmp_path: Path,
) -> None:
    """Killed while its sends wait for a slow system (2 s), the dispatch process leaves
    leases of 30 s; serve releases them before starting it again, so the deliveries are sent
    again and recorded within seconds."""
    options = ("--dispatch-processes", "1")
    with hub_server(tmp_path, receiver_args=("--delay", "2"), serve_options=options) as hub:
        wait_for(lambda: len(_dispatch_pids(hub.process.pid)) == 1, timeout=30)
        [first] = _dispatch_pids(hub.process.pid)
        posted = _post_notice(hub)
        # the sends are out (every delivery claimed), the system answers at 2 s
        wait_for(lambda: _leased(tmp_path / "hub-data") == posted[1], timeout=30)
        time.sleep(0.2)  # claimed, then sent: the requests reach the system
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _all_recorded(tmp_path / "hub-data"), timeout=60)
        assert time.monotonic() - killed < 20  # the lease alone would hold them 30 s
        assert _delivered(hub, posted)  # applied once each: the resends were duplicates
