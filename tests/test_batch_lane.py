"""The batch lane (bus/batch_lane.py): notifications submitted while a batch runs go into the
next one, each acknowledged only after its commit; a raising message fails alone; a cancelled
one is never stored; closing finishes what was taken."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

import pytest

from bus.batch_lane import BatchLane, LaneClosed
from bus.hub import Hub
from bus.pipeline import STAGE_ORDER, FunctionStage, Message, Pipeline, Stage, StageName
from bus.store.batch import ingest_batch
from tests.test_batch_ingest import LOOPBACK, notice, stored_count

WAIT = 30  # seconds: only reached when something is broken


def _message(raw: bytes) -> Message:
    return Message(raw=raw, adapter="test", source_address=LOOPBACK)


@dataclass
class HeldLane:
    """A lane on ``hub``'s pipeline whose first batch waits for :attr:`release`."""

    hub: Hub
    pipeline: Pipeline
    release: threading.Event = field(default_factory=threading.Event)
    running: threading.Event = field(default_factory=threading.Event)
    batches: list[int] = field(default_factory=list)
    observed: list[float] = field(default_factory=list)
    lane: BatchLane = field(init=False)

    def __post_init__(self) -> None:
        self.lane = BatchLane(
            self._run_batch, lambda _message, seconds: self.observed.append(seconds)
        )

    def _run_batch(
        self, messages: Sequence[Message], on_error: Callable[[Message, Exception], None]
    ) -> list[Message]:
        self.batches.append(len(messages))
        self.running.set()
        assert self.release.wait(WAIT)
        return ingest_batch(self.pipeline, messages, on_error)

    def submit(self, raw: bytes) -> Future[Message]:
        return self.lane.submit(_message(raw))

    def first_batch_running(self) -> Future[Message]:
        """One message submitted; its batch has started and waits."""
        future = self.submit(notice(0))
        assert self.running.wait(WAIT)
        return future


@pytest.fixture
def held(hub: Hub) -> Iterator[HeldLane]:
    lane = HeldLane(hub, hub.pipeline)
    yield lane
    lane.release.set()
    lane.lane.close()


def _acknowledged(future: Future[Message]) -> Message:
    message = future.result(WAIT)
    assert message.ack is not None and not message.ack.duplicate, message.findings
    assert message.trace == list(STAGE_ORDER)
    return message


def test_messages_submitted_during_a_batch_form_the_next_one(held: HeldLane) -> None:
    first = held.first_batch_running()
    queued = [held.submit(notice(seed)) for seed in range(1, 6)]
    assert not first.done() and not any(future.done() for future in queued)
    held.release.set()
    for future in [first, *queued]:
        _acknowledged(future)
    assert held.batches == [1, 5]
    assert stored_count(held.hub) == 6
    assert len(held.observed) == 6


def test_an_idle_lane_runs_a_message_at_once(hub: Hub) -> None:
    lane = BatchLane(lambda messages, on_error: ingest_batch(hub.pipeline, messages, on_error),
                     lambda _message, _seconds: None)  # fmt: skip
    try:
        for seed in range(3):
            _acknowledged(lane.submit(_message(notice(seed))))
    finally:
        lane.close()
    assert stored_count(hub) == 3


def _raising_for(stage: Stage, raw: bytes) -> Stage:
    def run(message: Message) -> Message:
        if message.raw == raw:
            raise RuntimeError("a defect in a stage")
        return stage(message)

    return FunctionStage(stage.name, run)


def test_a_message_whose_stage_raises_fails_alone(hub: Hub) -> None:
    poison = notice(3)
    stages = [
        _raising_for(stage, poison) if stage.name is StageName.AUTHORIZE else stage
        for stage in hub.pipeline.stages
    ]
    held = HeldLane(hub, Pipeline(stages))
    try:
        first = held.first_batch_running()
        queued = {seed: held.submit(notice(seed)) for seed in range(1, 6)}
        held.release.set()
        _acknowledged(first)
        with pytest.raises(RuntimeError, match="a defect in a stage"):
            queued.pop(3).result(WAIT)
        for future in queued.values():
            _acknowledged(future)
        assert held.batches == [1, 5]
        assert stored_count(hub) == 5
    finally:
        held.release.set()
        held.lane.close()


def test_a_failing_batch_fails_its_callers_and_the_lane_goes_on(hub: Hub) -> None:
    failures = iter([OSError("disk I/O error")])

    def run_batch(
        messages: Sequence[Message], on_error: Callable[[Message, Exception], None]
    ) -> list[Message]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return ingest_batch(hub.pipeline, messages, on_error)

    lane = BatchLane(run_batch, lambda _message, _seconds: None)
    try:
        with pytest.raises(OSError, match="disk I/O error"):
            lane.submit(_message(notice(1))).result(WAIT)
        _acknowledged(lane.submit(_message(notice(2))))
    finally:
        lane.close()
    assert stored_count(hub) == 1


def test_a_cancelled_submission_is_never_stored(held: HeldLane) -> None:
    first = held.first_batch_running()
    given_up, kept = held.submit(notice(1)), held.submit(notice(2))
    assert given_up.cancel()  # the caller went away before its batch began
    held.release.set()
    _acknowledged(first)
    _acknowledged(kept)
    with pytest.raises(CancelledError):
        given_up.result(WAIT)
    assert held.batches == [1, 1]
    assert stored_count(held.hub) == 2


def test_closing_finishes_what_was_taken_and_refuses_more(held: HeldLane) -> None:
    first = held.first_batch_running()
    queued = held.submit(notice(1))
    closing = threading.Thread(target=held.lane.close)
    closing.start()
    held.release.set()
    closing.join(WAIT)
    assert not closing.is_alive()
    _acknowledged(first)
    _acknowledged(queued)
    with pytest.raises(LaneClosed):
        held.submit(notice(2))
    assert stored_count(held.hub) == 2


def test_a_hub_closes_its_lane(hub: Hub) -> None:
    _acknowledged(hub.submit(_message(notice(1))))
    hub.lane.close()
    with pytest.raises(LaneClosed):
        hub.submit(_message(notice(2)))


def test_an_idle_lane_keeps_no_message_of_its_last_batch() -> None:
    """Once a batch is settled its messages (raw body and tree, up to 10 MB and some 200 MB
    each) belong to their callers only: the lane waiting for the next submission used to hold
    the whole last batch until then."""
    import gc
    import weakref

    class Tracked(Message):  # a slotted Message cannot be weakly referenced
        pass

    lane = BatchLane(lambda messages, _on_error: list(messages), lambda _m, _s: None)
    try:
        future = lane.submit(Tracked(raw=b"<r/>", adapter="test", source_address=LOOPBACK))
        gone = weakref.ref(future.result(WAIT))
        del future
        for _ in range(100):  # the lane thread leaves its loop body just after settling
            gc.collect()
            if gone() is None:
                break
            threading.Event().wait(0.01)
        assert gone() is None, "the idle lane still holds its last batch"
    finally:
        lane.close()
