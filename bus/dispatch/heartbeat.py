"""The dispatch workers' heartbeat, read by ``/readyz``: a hub that accepts messages but whose
workers are gone (stopped, hung, a dispatch process frozen or crash-looping) is not ready.

Every worker beats as it works: at each turn of its loop (at least once per poll, 1 s, when
idle), after each send, and — while a slow round is under way — each time its lease keeper
renews the round's leases (every third of a lease). A beat is one ``monotonic()`` store in
memory: nothing is written per delivery.

- In-process workers (``WorkerPool`` in the HTTP process): the pool's :class:`Heartbeat` is
  registered in this process while the pool runs; readiness reads it directly.
- ``renkei serve --dispatch-processes N``: each dispatch process writes the time of its
  pool's last beat to ``<data_dir>/dispatch/<pid>.beat`` once a second (from its main
  thread; replaced atomically, removed when it stops). serve tells its HTTP processes how
  many to expect (:data:`EXPECTED_PROCESSES_ENV`); they read the files. The time is the
  machine's monotonic clock (``CLOCK_MONOTONIC``, the same in every process of one boot),
  never the wall clock: after the wall clock jumped 2 hours forward (a VM resumed after a
  migration) a working dispatch process's beat read 2 hours old, and after NTP stepped it 5
  minutes back a dead one's read fresh for 5 minutes.

A beat older than ``RENKEI_DISPATCH_STALE_SECONDS`` (default 30) is stale.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

#: Seconds after which a worker's last beat no longer counts as alive.
STALE_ENV = "RENKEI_DISPATCH_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 30.0
#: Set by ``renkei serve`` for its HTTP processes: how many dispatch processes it runs.
EXPECTED_PROCESSES_ENV = "RENKEI_DISPATCH_PROCESSES"
BEAT_SUFFIX = ".beat"


class Heartbeat:
    """When any worker of one pool was last seen working."""

    __slots__ = ("_last", "key", "workers")

    def __init__(self, key: object, workers: int) -> None:
        self.key = key  # what the workers dispatch from (the store's sessionmaker)
        self.workers = workers
        self._last: float | None = None

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float | None:
        """Seconds since the last beat; None before the first."""
        return None if self._last is None else time.monotonic() - self._last

    def last(self) -> float | None:
        """``time.monotonic()`` at the last beat; None before the first."""
        return self._last


_lock = threading.Lock()
_running: list[Heartbeat] = []


def register(heartbeat: Heartbeat) -> None:
    with _lock:
        _running.append(heartbeat)


def unregister(heartbeat: Heartbeat) -> None:
    with _lock:
        if heartbeat in _running:
            _running.remove(heartbeat)


def running_ages(key: object) -> list[float | None]:
    """The age of the last beat of every running pool of this process dispatching from
    ``key``."""
    with _lock:
        return [h.age() for h in _running if h.key is key]


def stale_seconds() -> float:
    value = os.environ.get(STALE_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_STALE_SECONDS
    except ValueError:
        seconds = DEFAULT_STALE_SECONDS
    return seconds if seconds > 0 else DEFAULT_STALE_SECONDS


def expected_processes() -> int:
    value = os.environ.get(EXPECTED_PROCESSES_ENV, "")
    return int(value) if value.isdigit() else 0


def beat_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "dispatch"


def write_beat(directory: Path, heartbeat: Heartbeat, pid: int | None = None) -> None:
    """This process's last beat, as a file another process can read (atomic replace)."""
    pid = pid or os.getpid()
    at = heartbeat.last()
    if at is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{pid}{BEAT_SUFFIX}"
    partial = directory / f".{pid}{BEAT_SUFFIX}.tmp"
    partial.write_text(json.dumps({"pid": pid, "monotonic": at, "workers": heartbeat.workers}))
    os.replace(partial, path)


class BeatFile:
    """A dispatch process's once-a-second :func:`write_beat`, which tells whether its writes
    started or stopped failing (a full disk: "No space left on device"), so the process logs
    that once each way rather than a line a second for as long as the disk stays full."""

    __slots__ = ("directory", "failing")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.failing: str | None = None  # why the last write failed; None when it did not

    def write(self, heartbeat: Heartbeat) -> tuple[str, str] | None:
        """Write the beat; ``("failed", why)`` when this write is the first to fail,
        ``("written", why it had failed)`` when it is the first to succeed after, else None."""
        try:
            write_beat(self.directory, heartbeat)
        except OSError as error:
            first, self.failing = self.failing is None, str(error)
            return ("failed", self.failing) if first else None
        if self.failing is None:
            return None
        cleared, self.failing = self.failing, None
        return ("written", cleared)


def remove_beat(directory: Path, pid: int | None = None) -> None:
    (directory / f"{pid or os.getpid()}{BEAT_SUFFIX}").unlink(missing_ok=True)


def process_ages(directory: Path) -> dict[int, float]:
    """The age of each dispatch process's last beat, by pid (unreadable files are skipped:
    one may be being replaced, and a file of an older version holds wall-clock time)."""
    ages: dict[int, float] = {}
    now = time.monotonic()
    for path in directory.glob(f"*{BEAT_SUFFIX}"):
        try:
            document: Any = json.loads(path.read_text())
            ages[int(document["pid"])] = max(now - float(document["monotonic"]), 0.0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return ages
