"""The folder of prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``) over a
hub's years.

Each process that counts writes files of its own (``counter_<pid>.db``,
``histogram_<pid>.db``), and a scrape reads and adds up every file in the folder. A process
that has exited leaves its files behind, and its counts must stay in the totals: a counter
that goes down reads to Prometheus as a reset (``rate()`` would count the whole total again).
But every dispatch process ``renkei serve`` restarts, every uvicorn worker restarted, every
``renkei import`` or ``renkei worker`` sharing the folder adds files, and each scrape opened
them all: thousands after months, and ``/metrics`` slower with each.

So a scrape first folds the files of exited processes into one file per kind
(``counter_merged.db``, ``histogram_merged.db``): their values are added up key by key (a
counter, a histogram's buckets, sum and count are all sums, as the scrape adds them anyway)
and their files removed; the totals stay the same and the folder holds one file per living
process and kind, plus the merged ones. It happens under an exclusive lock on
``<folder>/.lock`` that the scrape holds while it reads, so two processes answering
``/metrics`` at once neither fold the same files twice nor read a folder half folded.

A full disk: prometheus-client grows its files sparsely (``truncate``) and writes them through
``mmap``, so the first write to a page that no block backs yet, once the filesystem is full
(a label set counted for the first time), ended the process with SIGBUS. Every process of
the hub therefore reads and writes them through :class:`AllocatedMmapedDict`
(:func:`install_allocation`, when :mod:`bus.observability.metrics` is imported): a file's
blocks are allocated (``posix_fallocate``) before any page of it is mapped, so a full disk
is an ``OSError`` (ENOSPC) where the hub can catch it: that count is not kept, the process
goes on (:mod:`bus.observability.metrics`), and a fold that cannot write waits for the next
scrape.

Gauges: the hub writes none to this folder (the state gauges are read from the store at
scrape time), so prometheus-client's ``mark_process_dead``, which only removes the files of
``live*`` gauges, has nothing to do; any other file is left as it is.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import mmap_dict, values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

#: the kinds whose values are sums, so the files of several processes fold into one
SUMMED_KINDS = ("counter", "histogram", "summary")
MERGED = "merged"
LOCK_FILE = ".lock"
_HEADER_BYTES = 8  # prometheus-client's used-bytes counter and padding


class AllocatedMmapedDict(MmapedDict):
    """prometheus-client's ``MmapedDict`` whose file has real blocks under every page it maps.

    Its file is allocated when opened (``_INITIAL_MMAP_SIZE``, or the size it has) and before
    ``_init_value`` grows it (the same doubling), so the parent's ``truncate`` finds the room
    already there. On a full disk this raises ``OSError`` (ENOSPC) and leaves the dict as it
    was: its file is not grown, and a file this process was creating is removed (an empty
    ``*.db`` would break every scrape)."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            _allocate_file(filename)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]

    def _init_value(self, key: str) -> None:
        capacity = self._capacity
        while self._used + _entry_bytes(key) > capacity:
            capacity *= 2
        if capacity != self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)  # type: ignore[no-untyped-call]


def _entry_bytes(key: str) -> int:
    """What ``MmapedDict._init_value`` appends for ``key``: its length, the key padded to 8
    bytes, the value and the timestamp."""
    encoded = len(key.encode("utf-8"))
    return struct.calcsize("i") + encoded + (8 - (encoded + 4) % 8) + 16


def _allocate_file(filename: str) -> None:
    descriptor = os.open(filename, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        size = os.fstat(descriptor).st_size
        try:
            os.posix_fallocate(descriptor, 0, size or mmap_dict._INITIAL_MMAP_SIZE)
        except OSError:
            if size == 0:
                os.unlink(filename)
            raise
    finally:
        os.close(descriptor)


def install_allocation() -> None:
    """Make prometheus-client's multiprocess values use :class:`AllocatedMmapedDict` (before
    the first value is made). It replaces the one name ``prometheus_client.values`` looks up
    when a process opens its file; a prometheus-client whose files are made otherwise is
    refused here rather than left unprotected (tests/test_metrics_disk_full.py)."""
    if (
        not isinstance(getattr(mmap_dict, "_INITIAL_MMAP_SIZE", None), int)
        or getattr(values, "MmapedDict", None) not in (MmapedDict, AllocatedMmapedDict)
        or not callable(getattr(MmapedDict, "_init_value", None))
    ):
        raise RuntimeError("prometheus-client's multiprocess files changed: see metrics_dir.py")
    values.MmapedDict = AllocatedMmapedDict  # type: ignore[attr-defined]


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """The folder's exclusive lock (between the processes of one host)."""
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def reset_multiprocess_dir(directory: Path) -> None:
    """At ``renkei serve``'s start. When no process that counted into the folder is running,
    empty it: the counters restart with the hub. When one is (a second serve beside the first
    on the same data folder, a ``renkei worker``), keep its files and fold the others', so
    its totals do not drop: a second serve used to empty the folder under the one running,
    and then deleted the files of its processes that had exited."""
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory):
        living = {pid for pid in _pids(directory) if _alive(pid)}
        if living:
            _fold(directory, lambda pid: pid not in living)
            return
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)


class ProcessFilesCollector:
    """What every process counted into ``directory`` (prometheus-client's
    ``MultiProcessCollector``), read under the folder's lock once the exited processes'
    files are folded."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        with locked(self._directory):
            _fold(self._directory, lambda pid: not _alive(pid))
            reader = MultiProcessCollector(None, str(self._directory))  # type: ignore[no-untyped-call]
            return list(reader.collect())  # type: ignore[no-untyped-call]


def _fold(directory: Path, exited: Callable[[int], bool]) -> None:
    """Add the values of the files of ``exited`` processes to the merged file of their kind
    and remove them (the caller holds :func:`locked`)."""
    for kind in SUMMED_KINDS:
        sources = [f for f in directory.glob(f"{kind}_*.db") if _exited(f, exited)]
        for empty in [f for f in sources if f.stat().st_size < _HEADER_BYTES]:
            empty.unlink()  # cut short as it was made: nothing to fold, even without room
            sources.remove(empty)
        if not sources:
            continue
        merged = directory / f"{kind}_{MERGED}.db"
        totals: dict[str, list[float]] = {}
        for source in [merged, *sources] if merged.exists() else sources:
            for key, value, timestamp in _values(source):
                total = totals.setdefault(key, [0.0, 0.0])
                total[0] += value
                total[1] = max(total[1], timestamp)
        try:
            _write(merged, totals)
        except OSError as error:  # no room (ENOSPC): the files stay, folded at a later scrape
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            merged.with_suffix(".partial").unlink(missing_ok=True)
            continue
        for source in sources:  # once merged holds them: a crash between counts them twice, not 0
            source.unlink()


def _write(merged: Path, totals: dict[str, list[float]]) -> None:
    """Replace ``merged`` at once: a file that is not ``*.db`` until it is complete."""
    partial = merged.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    written = AllocatedMmapedDict(str(partial))
    try:
        for key, (value, timestamp) in totals.items():
            written.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        written.close()  # type: ignore[no-untyped-call]
    os.replace(partial, merged)


def _values(file: Path) -> Iterator[tuple[str, float, float]]:
    """Each (key, value, timestamp) a process wrote to ``file`` (none in a file cut short
    before its header, by a process killed as it made the file)."""
    if file.stat().st_size < _HEADER_BYTES:
        return
    found = MmapedDict.read_all_values_from_file(str(file))  # type: ignore[no-untyped-call]
    for key, value, timestamp, _position in found:
        yield key, value, timestamp


def _exited(file: Path, exited: Callable[[int], bool]) -> bool:
    pid = file.stem.rpartition("_")[2]
    return pid.isdigit() and exited(int(pid))


def _pids(directory: Path) -> set[int]:
    pids = (file.stem.rpartition("_")[2] for file in directory.glob("*.db"))
    return {int(pid) for pid in pids if pid.isdigit()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
