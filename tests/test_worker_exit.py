"""`renkei worker`'s exit status, as a process manager reads it: stopped (SIGTERM, SIGINT)
→ 0; the store unreachable at start → non-zero with a coded message; a crash → non-zero.
On SQLite the command runs as `renkei serve`'s dispatch process (RENKEI_SERVE_PARENT); the
claimed-but-unsent batch released on stop: tests/test_dispatch_rounds.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bus.cli.dispatch import _dead_workers
from bus.dispatch.processes import SERVE_PARENT_ENV
from tests.support.receivers import free_port

RENKEI = str(Path(sys.executable).parent / "renkei")
# `renkei worker` whose first worker thread dies of an error no round catches
FIRST_WORKER_CRASHES = """
import sys
from bus.dispatch.worker import Worker

def beat(self):
    if self.worker_id.endswith(":0"):
        raise RuntimeError("worker crashed")

Worker.beat = beat
from bus.cli import app
sys.argv[0] = "renkei"
sys.exit(app())
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """SQLite, as `renkei serve`'s dispatch process (the worker refuses SQLite otherwise)."""
    env = {k: v for k, v in os.environ.items() if k != "RENKEI_DATABASE_URL"}
    env |= {"RENKEI_DATA_DIR": str(tmp_path / "data"), SERVE_PARENT_ENV: str(os.getpid())}
    return env | extra


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_text(encoding="utf-8", errors="replace"):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text} within 30 s"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_worker_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        process = subprocess.Popen([RENKEI, "worker"], env=_env(tmp_path), stderr=err)
        try:
            _wait_for_line(log, "dispatch.process_ready", process)
            process.send_signal(signum)
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    assert "Traceback" not in log.read_text()


def test_an_unreachable_store_at_start_is_a_coded_non_zero_exit(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://renkei:secret@127.0.0.1:{free_port()}/renkei"  # nothing there
    env = _env(tmp_path, RENKEI_DATABASE_URL=url, COLUMNS="400")
    del env[SERVE_PARENT_ENV]  # a worker of its own, on PostgreSQL
    done = subprocess.run([RENKEI, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "RK-OPS001" in done.stderr and "Traceback" not in done.stderr
    assert "secret" not in done.stderr


def test_a_crash_at_start_is_non_zero(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [RENKEI, "worker", "--metrics-port", port]
        done = subprocess.run(command, env=_env(tmp_path), capture_output=True, timeout=60)
    assert done.returncode == 1


@pytest.mark.slow  # ~3 s: the check runs once a second; light sibling below
def test_a_crashed_worker_thread_ends_the_process_non_zero(tmp_path: Path) -> None:
    """Formerly the process ran on with a worker less (or none) and exited 0 when stopped:
    a process manager never restarted it."""
    command = [sys.executable, "-c", FIRST_WORKER_CRASHES, "worker", "--concurrency", "2"]
    done = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=20)
    assert done.returncode == 1, done.stderr
    assert "dispatch.worker_died" in done.stderr


def test_dead_workers_are_those_whose_thread_ended() -> None:
    pool = SimpleNamespace(workers=[SimpleNamespace(worker_id=f"host:1:{i}") for i in (0, 1)])
    done = threading.Event()
    alive = threading.Thread(target=done.wait, name="renkei-host:1:0", daemon=True)
    alive.start()
    try:
        assert _dead_workers(pool) == ["host:1:1"]  # type: ignore[arg-type]
    finally:
        done.set()
        alive.join()
    assert _dead_workers(pool) == ["host:1:0", "host:1:1"]  # type: ignore[arg-type]
