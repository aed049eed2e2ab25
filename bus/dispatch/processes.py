"""``renkei serve``'s dispatch processes: the dispatch workers in processes of their own,
beside the HTTP processes.

Why: a process that both ingests and dispatches runs both under one interpreter lock, and
its threads spend much of their time handing it over. On the 2-core test VM the same hub
carried ~1.8 times the SOAP notifications with its dispatch in a process of its own, and
less CPU a message (docs/benchmarks.md, "A dispatch process").

Each one is ``renkei worker`` started with :data:`SERVE_PARENT_ENV`, which lets it open the
embedded SQLite file (it is this serve's child, on this machine, so the file's locks hold)
and makes it stop once its parent is gone. One that exits unexpectedly is started again,
after 1 s and then twice as long while it keeps failing (at most 30 s); what it had claimed
is released first (serve's ``on_exit``), so its deliveries need not wait for their leases.
Stopping sends SIGTERM (the worker releases what it had claimed), then SIGKILL after the
grace period.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from time import monotonic

from bus.observability.logs import get_logger

log = get_logger(__name__)

#: Set by ``renkei serve`` for its dispatch processes: the serving process's pid.
SERVE_PARENT_ENV = "RENKEI_SERVE_PARENT"

RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
#: A process that ran this long before exiting is restarted after the first delay again.
HEALTHY_SECONDS = 60.0


def serve_parent() -> int | None:
    """The pid of the ``renkei serve`` that started this process as a dispatch process."""
    value = os.environ.get(SERVE_PARENT_ENV, "")
    return int(value) if value.isdigit() else None


class _Child:
    __slots__ = ("delay", "process", "started")

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.started = monotonic()
        self.delay = RESTART_FIRST_SECONDS


class DispatchProcesses:
    """``count`` processes running ``renkei worker --concurrency threads``, supervised."""

    def __init__(
        self, count: int, threads: int, on_exit: Callable[[int], None] | None = None
    ) -> None:
        """``on_exit(pid)`` is called when a process has exited unexpectedly, before it is
        started again (serve releases what it had claimed)."""
        self._count = count
        self._on_exit = on_exit
        self._command = [
            sys.executable,
            "-c",
            "from bus.cli import app; app()",
            "worker",
            "--concurrency",
            str(threads),
        ]
        self._children: list[_Child] = []
        self._lock = threading.Lock()  # a restart and stop() never interleave
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._children = [_Child(self._spawn()) for _ in range(self._count)]
        self._monitor = threading.Thread(
            target=self._watch, name="renkei-dispatch-processes", daemon=True
        )
        self._monitor.start()

    def pids(self) -> list[int]:
        with self._lock:
            return [child.process.pid for child in self._children]

    def _spawn(self) -> subprocess.Popen[bytes]:
        environment = os.environ | {SERVE_PARENT_ENV: str(os.getpid())}
        # a session of its own: a terminal's Ctrl-C reaches serve, which stops it in order
        return subprocess.Popen(
            self._command, env=environment, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for child in list(self._children):
                code = child.process.poll()
                if code is not None:
                    self._restart(child, code)

    def _restart(self, child: _Child, code: int) -> None:
        if monotonic() - child.started >= HEALTHY_SECONDS:
            child.delay = RESTART_FIRST_SECONDS
        log.error(
            "dispatch.process_exited",
            pid=child.process.pid,
            returncode=code,
            restart_in_seconds=child.delay,
        )
        if self._on_exit is not None:
            try:
                self._on_exit(child.process.pid)
            except Exception:  # its claims then wait for their leases to expire
                log.exception("dispatch.exit_handling_failed", pid=child.process.pid)
        if self._stopping.wait(child.delay):
            return
        with self._lock:
            if self._stopping.is_set():
                return
            child.started = monotonic()
            child.delay = min(child.delay * 2, RESTART_MAX_SECONDS)
            try:
                child.process = self._spawn()
            except OSError as error:  # tried again at the next look, after the longer delay
                log.error("dispatch.process_not_started", error=str(error))
                return
        log.info("dispatch.process_restarted", pid=child.process.pid)

    def stop(self, grace_seconds: float = 30.0) -> None:
        """SIGTERM to each, SIGKILL to any still running after ``grace_seconds``."""
        with self._lock:
            self._stopping.set()
            processes = [child.process for child in self._children]
        if self._monitor is not None:
            self._monitor.join()
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(max(deadline - monotonic(), 0))
            except subprocess.TimeoutExpired:
                log.warning("dispatch.process_killed", pid=process.pid)
                process.kill()
                process.wait()
