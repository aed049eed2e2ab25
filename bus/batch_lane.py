"""The batch lane: concurrent callers' notifications run the pipeline together, in one thread.

The HTTP adapters used to run each message in a thread of its own, up to
``RENKEI_INGEST_THREADS`` at once. The pipeline is CPU-bound under one GIL, so those threads
mostly waited for each other: under load the process made some forty context switches a
message and spent a quarter of its CPU in the kernel, and the Store stage's group commit only
grouped the messages whose threads happened to be waiting in it.

Here (an Aggregator, in EIP terms) a caller hands its message over and waits for its future;
one thread takes everything that has queued (up to :data:`MAX_BATCH`), runs every stage for
each message and stores the accepted ones in one transaction (:func:`bus.store.batch.
ingest_batch`, the path a file import takes), then settles the futures. An idle hub runs a
message at once (a batch of one, no timer); a busy one runs as many as arrived during the
previous batch. Each message is acknowledged only after the commit that holds it.

Only messages that wait for nothing but the store belong here: an inquiry waits for its
provider and would hold up every batch behind it, so it keeps a thread of its own.

A message whose stage raises fails alone (its future gets the exception). When storing the
batch fails even message by message (the database itself is failing), every message of the
batch not yet settled gets that error: the senders are answered with a server fault and
resend (the Idempotent Receiver makes the resend of one that was stored a duplicate). A store
that cannot be reached now fails the batch at once (no retry one by one); the adapters answer
RK-STO008 and log the outage once, so the batch is logged here in one line, without a
traceback.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from time import perf_counter

from bus.pipeline import Message
from bus.store.write_health import describe, is_store_unavailable

log = logging.getLogger(__name__)

#: Messages per batch at most: the Store stage's group size.
MAX_BATCH = 100

RunBatch = Callable[[Sequence[Message], Callable[[Message, Exception], None]], list[Message]]
Observe = Callable[[Message, float], None]


class LaneClosed(RuntimeError):
    """The hub is closing: the message was not taken (nothing of it is stored)."""


class _Submission:
    __slots__ = ("future", "message", "submitted")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.future: Future[Message] = Future()
        self.submitted = perf_counter()


class BatchLane:
    """``submit(message)`` returns a future of the message as :meth:`bus.pipeline.Pipeline.run`
    would leave it. ``run_batch`` runs a batch and hands each message whose stage raised to its
    second argument; ``observe`` is told each finished message and the seconds it spent in the
    lane (queued and run)."""

    def __init__(self, run_batch: RunBatch, observe: Observe, max_batch: int = MAX_BATCH) -> None:
        self._run_batch = run_batch
        self._observe = observe
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, message: Message) -> Future[Message]:
        submission = _Submission(message)
        with self._lock:
            if self._closed:
                raise LaneClosed("the hub is closing")
            if self._thread is None:  # started on first use: a CLI that opens a hub runs none
                self._thread = threading.Thread(target=self._run, name="batch-lane", daemon=True)
                self._thread.start()
            self._queue.put(submission)
        return submission.future

    def close(self, timeout: float = 30.0) -> None:
        """Take no more; finish what was submitted, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            try:
                self._settle(batch)
            except Exception as error:  # never leave a caller waiting, never stop the lane
                if is_store_unavailable(error):  # an outage: the adapter logs it once (RK-OPS001)
                    log.info("a batch of %d messages was refused: %s", len(batch), describe(error))
                else:
                    log.warning("a batch of %d messages failed", len(batch), exc_info=error)
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_exception(error)
            del batch  # settled: its messages (bodies and trees) are their callers' alone now
            if stop:
                return

    def _take(self) -> tuple[list[_Submission], bool]:
        """What has queued, the first waited for; ``True`` once the closing mark was taken.
        A caller that gave up (its future cancelled) is left out: nothing of it is stored."""
        batch: list[_Submission] = []
        item = self._queue.get()
        while item is not None:
            if item.future.set_running_or_notify_cancel():
                batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _settle(self, batch: list[_Submission]) -> None:
        if not batch:
            return
        failed: dict[int, Exception] = {}

        def on_error(message: Message, error: Exception) -> None:
            failed[id(message)] = error

        finished = iter(self._run_batch([s.message for s in batch], on_error))
        now = perf_counter()
        for submission in batch:
            error = failed.get(id(submission.message))
            if error is not None:
                submission.future.set_exception(error)
                continue
            message = next(finished)
            try:
                self._observe(message, now - submission.submitted)
            except Exception:
                log.exception("observing an ingested message failed")
            submission.future.set_result(message)
