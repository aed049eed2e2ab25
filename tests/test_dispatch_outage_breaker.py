"""The circuit breaker: a destination that cannot be reached at all (connection refused) is
held — ``destination_states.held_until``, growing from ``base_delay`` to ``max_delay`` — and
the failed attempt does not count toward the message's ``max_attempts`` (only ``max_age``
bounds it); its attempt row says ``unreachable``. A destination that answers with an error
for a message still costs that message its attempts. Real HTTP receivers on 127.0.0.1, the
store's clock simulated (``Worker(clock=…)``), as tests/test_long_outage.py.

docs/dispatch.md (配信先に届かないとき) and docs/operations.md (配信先の長期障害)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bus.config.models import RetryPolicy
from bus.dispatch import operations
from bus.dispatch.retry import hold_after
from bus.dispatch.transport import Outcome, SendResult, destination_wide
from bus.dispatch.worker import Worker, _breaker_hold
from bus.store.db import Store
from bus.store.models import Delivery, DeliveryAttempt, DestinationState
from tests.support.receivers import Receiver
from tests.test_dispatch import (  # noqa: F401
    _cli,
    add_message,
    hub_config,
    receivers,
    states,
    store,
)
from tests.test_long_outage import outage_worker


def _run(worker: Worker, clock: list[datetime], until: datetime) -> int:
    """Rounds until ``until``, the clock jumping a minute whenever a round sends nothing;
    how many sends were attempted."""
    attempted = 0
    while clock[0] < until:
        sent = worker.run_once()
        attempted += sent
        if not sent:
            clock[0] = min(clock[0] + timedelta(minutes=1), until)
    return attempted


def _outcomes(hub_store: Store) -> Counter[str]:
    with hub_store.sessions() as session:
        return Counter(session.scalars(select(DeliveryAttempt.outcome)))


def _hold(hub_store: Store) -> DestinationState | None:
    with hub_store.sessions() as session:
        return session.get(DestinationState, "tainou")


def test_what_is_destination_wide() -> None:
    """No connection (refused, DNS, connect timeout, no route, TLS, a folder) is the
    destination's; any answer or a failure after the request went out is the message's."""
    wide = [
        "connection: ConnectionRefusedError",
        "connection: ConnectError",
        "connection: gaierror",
        "timeout: ConnectTimeout",
        "broker: OperationalError",
        "folder: No such file or directory",
    ]
    narrow = [
        "HTTP 500 Internal Server Error",
        "HTTP 502 Bad Gateway",
        "HTTP 503 Service Unavailable",
        "HTTP 504 Gateway Timeout",
        "timeout: ReadTimeout",
        "connection: ConnectionResetError",
        "connection: RemoteDisconnected",
    ]
    assert all(destination_wide(SendResult(Outcome.RETRY, error=e)) for e in wide)
    assert not any(destination_wide(SendResult(Outcome.RETRY, error=e)) for e in narrow)
    assert not destination_wide(SendResult(Outcome.PERMANENT, error=wide[0]))


def test_hold_grows_to_max_delay() -> None:
    policy = RetryPolicy()  # 1 s … 10 min
    lengths, previous = [], None
    for _ in range(12):
        previous = hold_after(policy, previous)
        lengths.append(previous.total_seconds())
    assert lengths == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    # read back from held_reason: sub-second holds grow too; a hold ended long ago restarts
    fast = RetryPolicy(base_delay=timedelta(milliseconds=50), max_delay=timedelta(seconds=1))
    now = datetime(2026, 5, 1, 18, tzinfo=UTC)
    last = (now, "unreachable, held 0.05 s: connection: ConnectError")
    assert _breaker_hold(fast, now, last) == timedelta(milliseconds=100)
    assert _breaker_hold(fast, now + timedelta(seconds=2), last) == timedelta(milliseconds=50)
    assert _breaker_hold(fast, now, (now, "HTTP 429; Retry-After 5 s")) == fast.base_delay


def test_refused_connections_hold_the_destination_and_burn_no_attempts(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """Down for two hours with ``max_attempts`` 3: nothing is dead (it was, after minutes);
    one delivery probes, once a hold, while the others wait untried; the hold shows in
    `destinations list`; each attempt is recorded as ``unreachable``. Back up, everything
    arrives within one ``max_delay``, in order per subject."""
    tainou = receivers("tainou")  # not started: connection refused
    start = datetime.now(UTC) - timedelta(hours=3)
    clock = [start]
    policy = RetryPolicy(max_attempts=3)
    worker = outage_worker(store, tainou.url, clock, policy)
    sent = [add_message(store.sessions, f"S{i % 5}", ("tainou",), now=start)[0] for i in range(15)]
    tried = _run(worker, clock, start + timedelta(hours=2))
    assert set(states(store.sessions).values()) == {"pending"}
    outcomes = _outcomes(store)
    assert set(outcomes) == {"unreachable"} and outcomes["unreachable"] == tried
    assert 10 <= tried <= 30  # ramp 1 s … 10 min, then one probe per 10 min
    hold = _hold(store)
    assert hold is not None and hold.changed_by == "dispatch:unreachable"
    assert (hold.held_reason or "").startswith(
        "unreachable, held 600 s: connection: ConnectionRefusedError"
    )
    with store.sessions() as session:  # what `renkei destinations list` shows, at the clock
        (row,) = operations.destination_overview(session, now=clock[0])
    assert row.held_until is not None and row.held_until > clock[0] and row.dead == 0
    assert row.waiting == 15 and row.retrying == 1  # one probe; the others never tried
    tainou.start()
    back = clock[0]
    _run(worker, clock, back + policy.max_delay + timedelta(minutes=1))
    assert set(states(store.sessions).values()) == {"delivered"}
    received = tainou.applied()
    assert sorted(received) == sorted(sent)
    for subject in range(5):
        mine = [m for i, m in enumerate(sent) if i % 5 == subject]
        assert [received.index(m) for m in mine] == sorted(received.index(m) for m in mine)


def test_an_answering_destination_still_costs_the_message_its_attempts(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """Unreachable twice (uncounted), then answering 500 for it: dead by ``attempts`` after
    ``max_attempts`` counted ones — its history holds all four."""
    tainou = receivers("tainou")
    start = datetime.now(UTC) - timedelta(hours=1)
    clock = [start]
    worker = outage_worker(store, tainou.url, clock, RetryPolicy(max_attempts=2))
    _message, (delivery,) = add_message(store.sessions, "A", ("tainou",), now=start)
    assert worker.run_once() == 1
    clock[0] += timedelta(minutes=1)
    assert worker.run_once() == 1
    tainou.start("--fail-status", "500")
    _run(worker, clock, start + timedelta(minutes=30))
    with store.sessions() as session:
        row = session.get_one(Delivery, delivery)
        history = session.scalars(
            select(DeliveryAttempt.outcome)
            .where(DeliveryAttempt.delivery_id == delivery)
            .order_by(DeliveryAttempt.attempt)
        ).all()
    assert (row.state, row.attempts) == ("dead", 4)
    assert history == ["unreachable", "unreachable", "retry", "retry"]


def test_an_unreachable_destination_still_dead_letters_by_age(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """``max_age`` still bounds a delivery tried while its destination is down."""
    tainou = receivers("tainou")
    start = datetime.now(UTC) - timedelta(hours=2)
    clock = [start]
    policy = RetryPolicy(max_age=timedelta(minutes=30))
    worker = outage_worker(store, tainou.url, clock, policy)
    _message, (delivery,) = add_message(store.sessions, "A", ("tainou",), now=start)
    _run(worker, clock, start + timedelta(minutes=45))
    with store.sessions() as session:
        row = session.get_one(Delivery, delivery)
    assert row.state == "dead"
    assert set(_outcomes(store)) == {"unreachable"}


@pytest.mark.slow
def test_measured_200_subjects_through_a_five_day_outage(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """docs/operations.md (配信先の長期障害): the default policy, 200 subjects, the destination
    refusing connections for 5 days. With the breaker no subject's head is dead by
    ``attempts`` (it was, all 200, within 4–25 min): one delivery probes (one attempt per
    ``max_delay``) and is dead by ``age`` after 72 h, the next one then probes; back up,
    the other 199 are delivered within ``max_delay``."""
    tainou = receivers("tainou")
    start = datetime.now(UTC) - timedelta(days=6)
    clock = [start]
    worker = outage_worker(store, tainou.url, clock, RetryPolicy())
    for i in range(200):  # received a millisecond apart: one due order on both stores
        add_message(store.sessions, f"S{i}", ("tainou",), now=start + timedelta(milliseconds=i))
    tried = _run(worker, clock, start + timedelta(hours=1))
    assert set(states(store.sessions).values()) == {"pending"}
    tried += _run(worker, clock, start + timedelta(days=5))
    counts = Counter(states(store.sessions).values())
    with store.sessions() as session:
        reasons = Counter(
            d.last_error for d in session.scalars(select(Delivery).where(Delivery.state == "dead"))
        )
    print(f"\nprobes over 5 days: {tried}; states: {dict(counts)}; dead errors: {dict(reasons)}")
    assert counts["dead"] == 1 and 700 < tried < 760  # the first probe, by age
    tainou.start()
    _run(worker, clock, clock[0] + timedelta(minutes=11))
    after = Counter(states(store.sessions).values())
    print(f"after recovery: {dict(after)}")
    assert after["pending"] == 0 and after["delivered"] == 200 - counts["dead"]
