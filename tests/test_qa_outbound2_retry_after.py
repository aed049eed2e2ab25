"""A destination that answers "come back in N seconds" (``Retry-After``) is sent nothing
before then — not the delivery that was told, nor the others waiting for it, nor a message
that arrives meanwhile — against a real local HTTP server and a real store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from bus.config.models import RetryPolicy
from bus.dispatch import operations
from bus.dispatch.claims import RETRY_AFTER_HOLD
from bus.dispatch.outcomes import hold_destinations
from bus.dispatch.worker import Worker
from bus.store.audit import utc
from bus.store.db import Store
from bus.store.models import DestinationState
from tests.test_dispatch import add_message, hub_config, states, store  # noqa: F401


class Busy(BaseHTTPRequestHandler):
    """``/zeimu`` answers 429 ``Retry-After: 60`` while ``busy``, then 200; ``/juki`` 200.
    Records (path, Renkei-Message-Id) of every request in arrival order."""

    protocol_version = "HTTP/1.1"
    busy = True
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Busy.seen.append((self.path, self.headers.get("Renkei-Message-Id", "")))
        if self.path == "/zeimu" and Busy.busy:
            self.send_response(429)
            self.send_header("Retry-After", "60")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def busy() -> Iterator[str]:
    Busy.busy, Busy.seen = True, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _sent_to(path: str) -> list[str]:
    return [message for where, message in Busy.seen if where == path]


def test_a_destination_that_asks_for_60_s_is_sent_nothing_for_60_s(
    store: Store,  # noqa: F811
    busy: str,
) -> None:
    """A 429 with ``Retry-After: 60`` held only the delivery it answered: the other
    deliveries to the destination were released and the next round (a second later) sent
    the next one, which got a 429 again — five waiting subjects, five requests in five
    seconds, to a system that had asked for a minute's rest."""
    clock = Clock()
    start = clock.now  # the 429 is answered at this time: the hold ends 60 s after it
    policy = RetryPolicy(max_attempts=50, max_age=timedelta(hours=1))
    config = hub_config({"zeimu": f"{busy}/zeimu", "juki": f"{busy}/juki"}, policy=policy)
    first_a = add_message(store.sessions, "A", ("zeimu",), now=clock())[0]
    for subject in "BCDE":
        add_message(store.sessions, subject, ("zeimu",), now=clock())
    second_a = add_message(store.sessions, "A", ("zeimu",), now=clock())[0]
    worker = Worker(store.sessions, lambda: config, None, "qa2:1", send_concurrency=1, clock=clock)
    try:
        assert worker.run_once() == 1  # one probe, answered 429
        assert len(_sent_to("/zeimu")) == 1
        for second in range(1, 60):
            clock.now += timedelta(seconds=1)
            if second == 10:  # a message arriving meanwhile waits too; other systems do not
                add_message(store.sessions, "F", ("zeimu",), now=clock())
                other = add_message(store.sessions, "G", ("juki",), now=clock())[1][0]
            worker.run_once()
        assert len(_sent_to("/zeimu")) == 1, "sent to a destination that asked to wait"
        assert states(store.sessions)[other] == "delivered"
        with store.sessions() as session:
            hold = session.get_one(DestinationState, "zeimu")
        assert not hold.paused and hold.changed_by == RETRY_AFTER_HOLD and hold.reason is None
        assert hold.held_reason == "HTTP 429 Too Many Requests; Retry-After 60 s"
        assert hold.held_until is not None and utc(hold.held_until) == start + timedelta(seconds=60)

        Busy.busy = False
        clock.now += timedelta(seconds=2)  # past the 60 s
        for _ in range(10):
            worker.run_once()
        assert set(states(store.sessions).values()) == {"delivered"}
        zeimu = _sent_to("/zeimu")
        assert len(zeimu) == 1 + 7  # the probe, then each of the 7 messages once
        assert zeimu.index(first_a, 1) < zeimu.index(second_a)  # order per subject kept
    finally:
        worker.close()


def test_a_hold_never_replaces_an_operators_pause_and_a_resume_ends_it(
    store: Store,  # noqa: F811
) -> None:
    """The hold shares the pause's row: a paused destination stays paused (with the
    operator's reason), and an operator resuming a held destination lets it be sent to."""
    now = datetime.now(UTC)
    until = now + timedelta(seconds=60)
    with store.sessions.begin() as session:
        operations.pause(session, "kokuho", reason="計画停止", actor="cli:ops", tenants=[])
    with store.sessions.begin() as session:
        hold_destinations(session.connection(), {"kokuho": (until, "HTTP 503; Retry-After 60 s")})
        hold_destinations(session.connection(), {"zeimu": (until, "HTTP 429; Retry-After 60 s")})
    with store.sessions() as session:
        paused = session.get_one(DestinationState, "kokuho")
        assert (paused.paused, paused.reason, paused.changed_by) == (True, "計画停止", "cli:ops")
        assert paused.held_until is None  # the pause stands as it is
    _, [delivery] = add_message(store.sessions, "A", ("zeimu",), now=now)
    worker = Worker(store.sessions, lambda: hub_config({}), None, "qa2:2", clock=lambda: now)
    try:
        assert worker._claim() == []  # held
        with store.sessions.begin() as session:
            operations.resume(session, "zeimu", actor="cli:ops", tenants=[])
        assert [job.delivery_id for job in worker._claim()] == [delivery]
        with store.sessions() as session:
            resumed = session.get_one(DestinationState, "zeimu")
        assert (resumed.held_until, resumed.held_reason) == (None, None)
    finally:
        worker.close()
