"""A parallel import: chunks of one file through the hub in several worker processes.

The importing process reads the lines and hands each 1,000-line chunk to a pool of worker
processes. Every worker opens the hub itself and runs the chunk through the one pipeline
(:class:`~bus.imports.chunk_work.ChunkWork`: parse, every stage, one stored transaction per
chunk, the list rows with owner matching), exactly as a one-job import does in-process.
The chunks' store transactions take turns in file order (:class:`StoreTurn`; the database
serialises them anyway), so the hub stores the records, and numbers each subject's
deliveries, in the order of the file, as with one job. The results come back in file order,
so the importing process commits the batch's work file (counts, rows, errors, resume cursor)
as before: the cursor only ever passes chunks whose records are stored.

A worker dies with the importing process (``PR_SET_PDEATHSIG`` on Linux; elsewhere it checks
its parent before each chunk): a killed import leaves no worker storing behind a later
resume. Workers are started with ``spawn``, never forked from a process holding open
connections and threads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Condition
from multiprocessing.util import Finalize
from pathlib import Path

from bus.collector import tune_collector
from bus.errors import make_finding
from bus.hub import Hub
from bus.imports.chunk_work import ChunkResult, ChunkWork, Span
from bus.imports.layout import load_section
from bus.imports.lines import RawLine
from bus.imports.matching import OwnerMatcher
from bus.imports.records import NoticeParser
from bus.imports.residents import ResidentIndex
from bus.observability.logs import configure_logging
from bus.settings import Settings

IN_FLIGHT_PER_JOB = 2  # chunks queued per worker: one being stored, one waiting
# Below ~20,000 records, starting the workers (~1.5 s) costs more than they save.
PARALLEL_FROM_BYTES = 4 << 20
MAX_DEFAULT_JOBS = 4  # measured up to 2 (docs/benchmarks.md); SQLite has one writer
_PR_SET_PDEATHSIG = 1


class WorkerLost(Exception):
    """A worker process stopped abruptly; carries the RK-IMP007 finding. The work file's
    cursor has not passed the chunks it held, so running the import again resumes."""

    def __init__(self, reason: str) -> None:
        self.finding = make_finding("RK-IMP007", path="/import", actual=reason)
        super().__init__(self.finding.message_en)


def default_jobs(file_size: int) -> int:
    """The worker processes for a file of ``file_size`` bytes: one per CPU this process may
    use (at most ``MAX_DEFAULT_JOBS``), or 1 — in-process — for a small file."""
    if file_size < PARALLEL_FROM_BYTES:
        return 1
    return min(available_cpus(), MAX_DEFAULT_JOBS)


def available_cpus() -> int:
    """The CPUs this process may use: more worker processes than that only cost memory
    (about 130 MB each) and time (30 jobs on 2 CPUs: 3.4 GB, four times slower)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


class StoreTurn:
    """Whose chunk may be stored now, shared by the workers: chunk ``n`` (numbered from 0 in
    this run) is stored after chunk ``n - 1``. A chunk that fails still passes the turn on,
    so no worker waits for ever (the import stops on the failure itself)."""

    def __init__(self, context: multiprocessing.context.SpawnContext) -> None:
        self._changed: Condition = context.Condition()
        self._next = context.RawValue("q", 0)

    @contextmanager
    def of(self, number: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._next.value >= number)
        try:
            yield
        finally:
            self.passed(number)

    def passed(self, number: int) -> None:
        with self._changed:
            if self._next.value <= number:
                self._next.value = number + 1
                self._changed.notify_all()


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What each worker needs to rebuild the importing process's chunk work."""

    settings: Settings
    layout: str | None
    encoding: str
    tenant: str
    town: str
    index_path: Path | None
    parent_pid: int


_work: ChunkWork | None = None
_turn: StoreTurn | None = None
_parent_pid = 0


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # gone before the signal was armed
        os._exit(1)


def _start_worker(spec: WorkerSpec, turn: StoreTurn) -> None:
    global _work, _turn, _parent_pid
    _turn, _parent_pid = turn, spec.parent_pid
    _die_with_parent(spec.parent_pid)
    # Ctrl-C reaches the whole process group: the importing process stops taking chunks and
    # waits for the workers to finish (and store) the ones they hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging("WARNING")  # as the import command: library warnings, no line per record
    hub = Hub.open(spec.settings)
    index = ResidentIndex(spec.index_path) if spec.index_path is not None else None
    parser = NoticeParser(load_section(spec.layout), spec.encoding, spec.tenant, spec.town)
    matcher = OwnerMatcher(index, spec.tenant, spec.town)
    _work = ChunkWork(hub, parser, matcher, spec.tenant)
    Finalize(_work, hub.close, exitpriority=10)  # run as the worker exits: pending writes
    if index is not None:
        Finalize(_work, index.close, exitpriority=5)
    tune_collector(spec.settings.gc_young_threshold)


def _process(chunk: list[RawLine], number: int, at_head: bool) -> ChunkResult:
    if os.getppid() != _parent_pid:  # the importing process is gone (without PDEATHSIG)
        os._exit(1)
    assert _work is not None and _turn is not None, "worker not started"
    try:
        return _work.process(chunk, at_head, _turn.of(number))
    finally:
        _turn.passed(number)  # also when the chunk failed before its store


class ChunkPool:
    """``jobs`` worker processes; :meth:`results` yields each chunk's result in file order."""

    def __init__(self, spec: WorkerSpec, jobs: int) -> None:
        self.spec, self.jobs = spec, jobs
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_start_worker, initargs=(spec, StoreTurn(context))
        )

    def results(
        self, chunks: Iterable[list[RawLine]], at_head: bool
    ) -> Iterator[tuple[Span, ChunkResult]]:
        try:
            yield from self._in_order(chunks, at_head)
        except BrokenProcessPool as broken:
            raise WorkerLost(str(broken) or "worker process lost") from broken

    def _in_order(
        self, chunks: Iterable[list[RawLine]], at_head: bool
    ) -> Iterator[tuple[Span, ChunkResult]]:
        pending: deque[tuple[Span, Future[ChunkResult]]] = deque()
        limit = self.jobs * IN_FLIGHT_PER_JOB
        interrupted = False
        try:
            for number, chunk in enumerate(chunks):
                future = self._executor.submit(_process, chunk, number, at_head)
                pending.append((Span.of(chunk), future))
                at_head = False
                if len(pending) >= limit:
                    yield self._oldest(pending)
        except KeyboardInterrupt:  # Ctrl-C: no new chunk; those in hand are still committed
            interrupted = True
        while pending:
            yield self._oldest(pending)
        if interrupted:
            raise KeyboardInterrupt

    @staticmethod
    def _oldest(
        pending: deque[tuple[Span, Future[ChunkResult]]],
    ) -> tuple[Span, ChunkResult]:
        span, future = pending[0]
        result = future.result()  # left in ``pending`` while waiting (a Ctrl-C here)
        pending.popleft()
        return span, result

    def close(self) -> None:
        """Wait for the workers to finish and close their hubs; queued chunks are dropped
        (after a failure: the resume cursor has not passed them)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
