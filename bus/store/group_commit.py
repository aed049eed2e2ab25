"""Group commit: concurrent callers' writes share one transaction (DESIGN §6, "commits may be
grouped for throughput").

Leader/follower, without a background thread: the first caller to arrive finds no group in
progress and becomes the leader; callers arriving while it writes queue up. When the leader's
transaction is done, it hands the results out and promotes the first queued caller, who takes
everything queued so far as the next group. An idle hub therefore commits a single message
at once (no timer, no added latency), and a busy one commits as many as arrived during the
previous commit. Each caller returns only after the transaction holding its item committed.

A leader may first have to wait for a shared resource (``turn``: on SQLite, the process's
write turn, which the dispatch workers' transactions also take). It takes its group only once
it holds the turn, so everything that queued while it waited goes into the same transaction
instead of forming a stream of one-message commits behind it.

If a group's transaction fails, each of its items is retried alone, so one bad item (or a
race on one key) fails only its own caller.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Waiter(Generic[Item, Result]):
    """``ready`` is held until the waiter may go on (a bare lock: cheaper to hand over than
    an Event when a group of threads is released at once)."""

    item: Item
    ready: threading.Lock = field(default_factory=_locked)
    done: bool = False
    settled: bool = False  # a result or an error is there
    result: Result | None = None
    error: BaseException | None = None

    def settle(self, result: Result | None = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.settled = result, error, True

    def outcome(self) -> Result:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # settled with a result


class GroupCommit(Generic[Item, Result]):
    """``submit(item)`` returns ``commit_group([…, item, …])``'s result for ``item``;
    ``commit_one(item)`` is used for a group of one and for each item of a failed group;
    both run inside ``turn()``, which the leader enters before it takes its group (so both
    must be able to re-enter it)."""

    def __init__(
        self,
        commit_group: Callable[[Sequence[Item]], Sequence[Result]],
        commit_one: Callable[[Item], Result],
        max_group: int = 100,
        turn: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self._commit_group = commit_group
        self._commit_one = commit_one
        self._max_group = max_group
        self._turn = turn
        self._mutex = threading.Lock()
        self._queue: deque[_Waiter[Item, Result]] = deque()
        self._leading = False

    def submit(self, item: Item) -> Result:
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._mutex:
            self._queue.append(waiter)
            lead = not self._leading
            self._leading = True
        if not lead:
            waiter.ready.acquire()  # released when done by a leader, or promoted to lead
        if not waiter.done:
            self._lead()
        return waiter.outcome()

    def _lead(self) -> None:
        """Write one group (this thread's item is at its head), then pass the lead on."""
        group: list[_Waiter[Item, Result]] = []
        try:
            with self._turn():
                with self._mutex:
                    count = min(len(self._queue), self._max_group)
                    group = [self._queue.popleft() for _ in range(count)]
                self._write(group)
        finally:
            with self._mutex:
                if self._queue:
                    self._queue[0].ready.release()  # promoted: it leads the next group
                else:
                    self._leading = False
            for waiter in group:
                if not waiter.settled:
                    waiter.settle(error=RuntimeError("the group commit was interrupted"))
                waiter.done = True
                if waiter.ready.locked():
                    waiter.ready.release()

    def _write(self, group: list[_Waiter[Item, Result]]) -> None:
        if len(group) > 1:
            try:
                results = self._commit_group([waiter.item for waiter in group])
            except Exception:
                pass  # retried one by one below: only the culprit fails
            else:
                for waiter, result in zip(group, results, strict=True):
                    waiter.settle(result)
                return
        for waiter in group:
            try:
                waiter.settle(self._commit_one(waiter.item))
            except BaseException as error:
                waiter.settle(error=error)
