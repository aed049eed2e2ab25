"""``renkei serve`` under a process manager (systemd, docs/operations.md): its exit status
says whether it stopped for a failure (non-zero: ``Restart=on-failure`` starts it again) or
because it was asked to (SIGTERM/SIGINT: 0); a SIGTERM lets requests in flight finish and
leaves no process behind; a SIGHUP does not end a single HTTP process.

The real command runs as a subprocess on its own port and data directory; signals are real.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bus.cli.serve import HTTP_FAILED, HTTP_GRACE_SECONDS, _supervisor_class
from bus.dispatch.processes import SERVE_PARENT_ENV, DispatchProcesses
from bus.observability.metrics import MULTIPROC_ENV
from bus.webapp import stop_with_serve
from tests.support.receivers import SAMPLE_CONFIG_DIR, answers, free_port, wait_for

RENKEI = str(Path(sys.executable).parent / "renkei")
ROOT = Path(__file__).resolve().parents[1]


# -- a tiny application for the light tests: uvicorn's supervisor, without the hub ---------


@asynccontextmanager
async def _refuse(_app: FastAPI) -> AsyncIterator[None]:
    await _open_store()
    yield


async def _open_store() -> None:
    raise RuntimeError("the store cannot be opened")


def failing_app() -> FastAPI:
    """An application whose startup fails, as the hub's does when its store cannot be opened."""
    return FastAPI(lifespan=_refuse)


def plain_app() -> FastAPI:
    return FastAPI()


def _run_http(factory: str, port: int) -> subprocess.Popen[bytes]:
    """``bus.cli.serve._run_http`` with two HTTP processes serving ``factory``."""
    code = (
        "import typer, uvicorn\n"
        "from bus.cli.serve import _run_http\n"
        "try:\n"
        f"    _run_http(uvicorn.Config('tests.test_serve_supervision:{factory}', factory=True,"
        f" port={port}, workers=2, log_config=None))\n"
        "except typer.Exit as stop:\n"
        "    raise SystemExit(stop.exit_code)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_the_supervisor_knows_a_requested_stop() -> None:
    """The light sibling of the two below: only SIGTERM/SIGINT count as asked to stop."""
    supervisor_class = _supervisor_class()
    for handle in ("handle_term", "handle_int"):
        supervisor = object.__new__(supervisor_class)  # no processes, no handlers
        supervisor.should_exit = threading.Event()
        assert not supervisor.requested
        getattr(supervisor, handle)()
        assert supervisor.requested and supervisor.should_exit.is_set()
    assert HTTP_FAILED != 0


# each starts uvicorn's supervisor with two processes (~3-7 s)
@pytest.mark.slow
def test_http_processes_that_cannot_start_end_the_supervisor_non_zero() -> None:
    process = _run_http("failing_app", free_port())
    try:
        assert process.wait(timeout=30) == 3  # uvicorn's supervisor returned: it used to be 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_sigterm_ends_the_supervisor_with_0() -> None:
    port = free_port()
    process = _run_http("plain_app", port)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}", "/docs"), timeout=30)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


# -- the real `renkei serve` ---------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _http_processes(pid: int) -> list[int]:
    return [p for p in _descendants(pid) if "spawn_main" in _command_line(p)]


def _alive(pids: list[int]) -> list[int]:
    """Those still running (not zombies)."""
    alive = []
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


class _Serve:
    def __init__(self, data: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RENKEI_") and k != MULTIPROC_ENV
        }
        environment |= {"RENKEI_DATA_DIR": str(data), "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR)}
        self.log = data.parent / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [RENKEI, "serve", "--port", str(self.port), "--no-samples", *options],
                env=environment,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for(lambda: answers(self.url), timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., _Serve]]:
    started: list[_Serve] = []

    def start(*options: str) -> _Serve:
        running = _Serve(tmp_path / "data", *options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def _request_in_flight(port: int) -> socket.socket:
    """A login form whose body is half sent: the request is in flight until the rest comes."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(
        b"POST /console/login HTTP/1.1\r\nHost: hub\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\n\r\nusername="
    )
    return client


def _finish(client: socket.socket) -> bytes:
    client.sendall(b"x&password=")
    client.settimeout(10)
    answer = client.recv(64)
    client.close()
    return answer


def _break_store(data: Path) -> None:
    """Replace the store's file (the running processes keep the one they opened)."""
    garbage = data / "garbage"
    garbage.write_bytes(b"not a database" * 512)
    os.replace(garbage, data / "renkei.db")
    for suffix in ("-wal", "-shm"):
        (data / f"renkei.db{suffix}").unlink(missing_ok=True)


@pytest.mark.slow
def test_an_http_process_that_cannot_start_again_stops_serve_non_zero(
    serve: Callable[..., _Serve], tmp_path: Path
) -> None:
    hub = serve("--http-workers", "2")
    _break_store(tmp_path / "data")
    os.kill(_http_processes(hub.process.pid)[0], signal.SIGKILL)
    # uvicorn restarts it, the restart cannot open the store: serve stops (it exited 0)
    assert hub.process.wait(timeout=60) == 3


@pytest.mark.slow
@pytest.mark.parametrize("http_workers", ["1", "2"])
def test_sigterm_finishes_requests_in_flight_and_leaves_no_process(
    serve: Callable[..., _Serve], http_workers: str
) -> None:
    hub = serve("--http-workers", http_workers, "--dispatch-processes", "1")
    below = _descendants(hub.process.pid)
    assert len(below) >= 1 + int(http_workers) - (1 if http_workers == "1" else 0)
    client = _request_in_flight(hub.port)
    time.sleep(0.3)
    started = time.monotonic()
    os.kill(hub.process.pid, signal.SIGTERM)
    time.sleep(1.0)
    assert _finish(client).startswith(b"HTTP/1.1 ")  # answered, not cut off
    assert hub.process.wait(timeout=90) == 0
    assert time.monotonic() - started < 30
    wait_for(lambda: not _alive(below), timeout=5)


@pytest.mark.slow
def test_an_http_process_killed_is_started_again(serve: Callable[..., _Serve]) -> None:
    hub = serve("--http-workers", "2")
    first = _http_processes(hub.process.pid)
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    wait_for(
        lambda: (
            len(_alive(_http_processes(hub.process.pid))) == 2
            and first[0] not in _http_processes(hub.process.pid)
        ),
        timeout=30,
    )
    wait_for(lambda: answers(hub.url, "/readyz"), timeout=30)
    assert hub.process.poll() is None
    os.kill(hub.process.pid, signal.SIGTERM)
    assert hub.process.wait(timeout=90) == 0


@pytest.mark.slow
def test_sighup_does_not_end_a_single_http_process(serve: Callable[..., _Serve]) -> None:
    hub = serve("--dispatch-processes", "1")
    below = _descendants(hub.process.pid)
    os.kill(hub.process.pid, signal.SIGHUP)
    time.sleep(1.5)
    assert hub.process.poll() is None  # it used to die of the signal, its dispatch orphaned
    assert answers(hub.url)
    os.kill(hub.process.pid, signal.SIGTERM)
    assert hub.process.wait(timeout=90) == 0
    wait_for(lambda: not _alive(below), timeout=5)


@pytest.mark.slow
def test_sigterm_ends_serve_within_its_grace_when_a_request_never_finishes(
    serve: Callable[..., _Serve],
) -> None:
    hub = serve("--http-workers", "2")
    client = _request_in_flight(hub.port)  # its body never comes
    time.sleep(0.3)
    started = time.monotonic()
    os.kill(hub.process.pid, signal.SIGTERM)
    # uvicorn waited without end by default: past systemd's TimeoutStopSec, then SIGKILL
    assert hub.process.wait(timeout=HTTP_GRACE_SECONDS + 30) == 0
    assert time.monotonic() - started < HTTP_GRACE_SECONDS + 10
    client.close()


# -- the sample unit (samples/systemd/renkei.service) --------------------------------------

UNIT = ROOT / "samples" / "systemd" / "renkei.service"
DISPATCH_GRACE_SECONDS = (
    inspect.signature(DispatchProcesses.stop).parameters["grace_seconds"].default
)


def _unit_settings() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def test_the_sample_unit_matches_how_serve_stops() -> None:
    unit = _unit_settings()
    assert unit["Restart"] == "on-failure"  # serve exits non-zero for a failure only
    assert unit["KillMode"] == "mixed"  # SIGTERM to serve, which stops its children in order
    assert unit["ExecStart"].split()[1] == "serve"
    # HTTP processes' grace, then the dispatch processes' (DispatchProcesses.stop), with room
    stop_seconds = int(unit["TimeoutStopSec"])
    assert stop_seconds >= HTTP_GRACE_SECONDS + DISPATCH_GRACE_SECONDS + 10
    assert int(unit["LimitNOFILE"]) > 1024


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_sample_unit_is_valid_for_systemd(tmp_path: Path) -> None:
    # verify needs ExecStart's program to exist: this checkout's renkei
    text = UNIT.read_text(encoding="utf-8").replace("/opt/renkei/venv/bin/renkei", RENKEI)
    (tmp_path / "renkei.service").write_text(text, encoding="utf-8")
    checked = subprocess.run(
        ["systemd-analyze", "verify", "./renkei.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""


def _leased(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        row = db.execute("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")
        return int(row.fetchone()[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [(), ("--http-workers", "2")], ids=["in-process", "dispatch-process"]
)
def test_sigterm_releases_the_deliveries_being_sent(tmp_path: Path, options: tuple[str]) -> None:
    """Sends in flight to a system that answers after 15 s: released at the stop, not left
    to their lease (measured ~10 s to stop)."""
    from tests.support.hub_server import hub_server, sample, serialize

    database = tmp_path / "hub-data" / "renkei.db"
    with (
        (tmp_path / "serve.log").open("wb") as log,
        hub_server(
            tmp_path, serve_options=options, receiver_args=("--delay", "15"), stderr=log
        ) as hub,
    ):
        for _ in range(3):
            posted = httpx.post(
                f"{hub.url}/api/v1/messages/LevyNotice",
                content=serialize(sample("LevyNotice")),
                headers={"Content-Type": "application/xml"},
                timeout=30,
            )
            assert posted.status_code == 202, posted.text
        wait_for(lambda: _leased(database) > 0, timeout=30)
        os.kill(hub.process.pid, signal.SIGTERM)
        assert hub.process.wait(timeout=90) == 0
    assert _leased(database) == 0


@pytest.mark.slow
def test_the_http_processes_stop_when_serve_is_killed(serve: Callable[..., _Serve]) -> None:
    hub = serve("--http-workers", "2")
    children = _http_processes(hub.process.pid)
    assert len(children) == 2
    os.kill(hub.process.pid, signal.SIGKILL)
    hub.process.wait()
    # they kept answering on serve's port: the serve started again refused it (RK-OPS012)
    wait_for(lambda: not _alive(children), timeout=20)
    assert not answers(hub.url)


def test_an_http_process_outside_serve_watches_no_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The light sibling: without serve (uvicorn started by hand, tests) nothing is asked."""
    monkeypatch.delenv(SERVE_PARENT_ENV, raising=False)
    stop_with_serve()
    monkeypatch.setenv(SERVE_PARENT_ENV, str(os.getpid()))  # serve's own process
    stop_with_serve()
