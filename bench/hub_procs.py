"""Processes for the hub benchmark: recording receivers and ``renkei worker`` subprocesses,
and CPU time per component read from ``/proc/<pid>/stat`` (utime + stime)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECEIVER = ROOT / "samples" / "systems" / "recording_receiver.py"
RENKEI = Path(sys.executable).parent / "renkei"
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICKS


def pids_matching(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def postgres_pids() -> list[int]:
    """The server and its backends (a backend started during a run counts from zero)."""
    return pids_matching("postgres")


def rabbitmq_pids() -> list[int]:
    return pids_matching("beam.smp")


def _host_jiffies() -> tuple[int, int]:
    """(total, steal) jiffies of this VM's CPUs, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


@dataclass
class CpuMeter:
    """CPU seconds per component between :meth:`start` and :meth:`stop`. Components are
    named groups of pids; a callable group is re-listed at stop (new postgres backends)."""

    groups: Mapping[str, Iterable[int] | str]
    _before: dict[int, float] = field(default_factory=dict)
    _host: tuple[int, int] = (0, 0)
    result: dict[str, float] = field(default_factory=dict)
    steal: float = 0.0  # share of the VM's CPU time the hypervisor gave to others

    def _pids(self, group: Iterable[int] | str) -> list[int]:
        if group == "postgres":
            return postgres_pids()
        if group == "rabbitmq":
            return rabbitmq_pids()
        assert not isinstance(group, str)
        return list(group)

    def start(self) -> None:
        self._host = _host_jiffies()
        self._before = {
            pid: cpu_seconds(pid) for group in self.groups.values() for pid in self._pids(group)
        }

    def stop(self) -> dict[str, float]:
        self.result = {
            name: sum(cpu_seconds(pid) - self._before.get(pid, 0.0) for pid in self._pids(group))
            for name, group in self.groups.items()
        }
        total, steal = _host_jiffies()
        self.steal = (steal - self._host[1]) / max(total - self._host[0], 1)
        return self.result


def self_cpu() -> float:
    return cpu_seconds(os.getpid())


class Receiver:
    """``samples/systems/recording_receiver.py`` as a subprocess, on a free port."""

    def __init__(self, directory: Path, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.log = directory / f"{name}-{port}.jsonl"
        self.process: subprocess.Popen[str] | None = None
        self._offset = 0
        self._applied = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.name}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Receiver:
        self.log.unlink(missing_ok=True)
        self._offset = self._applied = 0
        command = [sys.executable, str(RECEIVER), "--port", str(self.port), "--log", str(self.log)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "listening" in line, line
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def applied(self) -> int:
        """Messages applied so far, resends not counted (the log is read incrementally, so
        polling is cheap)."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return 0
        end = chunk.rfind(b"\n") + 1
        self._applied += chunk.count(b'"applied": true', 0, end)
        self._offset += end
        return self._applied


def wait_until_applied(
    receivers: Iterable[Receiver], total: int, timeout: float
) -> tuple[float, int]:
    """Poll the receivers' logs until they applied ``total`` messages, or ``timeout`` passed;
    returns the monotonic time and how many were applied by then."""
    receivers = list(receivers)
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        applied = sum(r.applied() for r in receivers)
        if applied >= total or now > deadline:
            return now, applied
        time.sleep(0.01)


def start_worker_process(env: Mapping[str, str], *options: str) -> subprocess.Popen[bytes]:
    """``renkei worker`` with the bench's store and broker (stderr kept for failures)."""
    return subprocess.Popen(
        [str(RENKEI), "worker", *options],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_process(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM (clean stop), then its stderr tail."""
    process.terminate()
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
    return (err or b"").decode(errors="replace")[-2000:]
