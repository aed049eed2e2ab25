"""A long unplanned outage of a destination (ゴールデンウィーク: 滞納管理 down from Friday
evening for five days) driven through real HTTP receivers on 127.0.0.1, the store's clock
simulated by the worker's ``clock`` and the operations' ``now``: what dies and why, a pause
after the outage began, resume, and redelivering everything, exactly once and in order per
subject."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bus.config.models import RetryPolicy
from bus.dispatch import operations
from bus.dispatch.worker import Worker
from bus.settings import Settings
from bus.store.db import Store
from bus.store.models import AuditRecord, Delivery
from tests.support.receivers import Receiver
from tests.test_dispatch import (  # noqa: F401
    _cli,
    add_message,
    hub_config,
    receivers,
    states,
    store,
)

pytestmark = pytest.mark.outage


def _all(hub_store: Store) -> list[Delivery]:
    with hub_store.sessions() as session:
        return list(session.scalars(select(Delivery)))


def _row(hub_store: Store, delivery: int) -> Delivery:
    with hub_store.sessions() as session:
        return session.get_one(Delivery, delivery)


def outage_worker(hub_store: Store, url: str, clock: list[datetime], policy: RetryPolicy) -> Worker:
    """One worker sending to ``tainou`` at ``url``, on the simulated clock ``clock[0]``."""
    config = hub_config({"tainou": url}, policy=policy, timeout=2)
    return Worker(
        hub_store.sessions,
        lambda: config,
        None,
        "w",
        clock=lambda: clock[0],
        send_concurrency=1,
        rng=random.Random(7),  # the same jitter each run: some dead, some still retrying
    )


def test_a_pause_of_days_does_not_dead_letter_by_age_after_resume(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """A delivery failing when the operator paused (the outage had begun), paused four days
    (longer than the 72 h age limit), then resumed while the system is still not answering:
    the paused days do not count against its age, so it is retried, not dead by ``age`` on
    its first failure after the resume (it was)."""
    down = receivers("tainou")  # never started: connection refused
    now = datetime.now(UTC) - timedelta(days=5)
    clock = [now]
    worker = outage_worker(store, down.url, clock, RetryPolicy())
    _message, (delivery,) = add_message(store.sessions, "A", ("tainou",), now=now)
    assert worker.run_once() == 1
    assert _row(store, delivery).attempts == 1
    with store.sessions.begin() as session:
        operations.pause(session, "tainou", reason="障害", actor="ops", now=now)
    clock[0] = now + timedelta(days=4)
    with store.sessions.begin() as session:
        operations.resume(session, "tainou", actor="ops", now=clock[0])
    assert worker.run_once() == 1  # due at once, fails again
    row = _row(store, delivery)
    assert (row.state, row.attempts) == ("pending", 2)


def test_resume_makes_backed_off_retries_due_at_once(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """The system comes back while its deliveries wait out a back-off of hours (a town's
    long-outage policy): `renkei destinations resume` — also of a system that was never
    paused — makes them due now, instead of the system idling until the back-off ends."""
    tainou = receivers("tainou")
    now = datetime.now(UTC) - timedelta(hours=1)
    clock = [now]
    hours = RetryPolicy(max_delay=timedelta(hours=6), base_delay=timedelta(hours=6))
    worker = outage_worker(store, tainou.url, clock, hours)
    message, (delivery,) = add_message(store.sessions, "A", ("tainou",), now=now)
    assert worker.run_once() == 1  # down: backed off
    with store.sessions.begin() as session:  # as the jitter may have chosen: 5 h
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery)
            .values(next_attempt_at=now + timedelta(hours=5))
        )
    tainou.start()
    clock[0] = now + timedelta(minutes=10)
    assert worker.run_once() == 0  # idle: the back-off holds it
    with store.sessions.begin() as session:
        due = operations.resume(session, "tainou", reason="復旧確認", actor="ops", now=clock[0])
    assert worker.run_once() == 1  # it was 0: idle until the back-off's end
    assert due == 1
    assert _row(store, delivery).state == "delivered"
    assert tainou.applied() == [message]
    with store.sessions() as session:
        resumed = session.scalars(
            select(AuditRecord.detail).where(AuditRecord.event == "resumed")
        ).all()
    assert [detail["due_now"] for detail in resumed] == [1]


def test_dlq_all_reports_progress_page_by_page(
    store: Store,  # noqa: F811
    store_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tens of thousands of dead letters after an outage: `dlq redeliver --all` says how far
    it is on stderr after each page (it said nothing until the end)."""
    monkeypatch.setattr("bus.cli.dispatch.ALL_PAGE", 2)
    ids = [add_message(store.sessions, f"S{i}", ("tainou",))[1][0] for i in range(5)]
    with store.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(state="dead"))
    result = _cli(
        store_settings, "dlq", "redeliver", "--all", "--destination", "tainou", "--reason", "復旧"
    )
    assert result.exit_code == 0, result.output
    assert "redelivered: 5" in result.stdout
    progress = [line for line in result.stderr.splitlines() if "looked at" in line]
    assert [line.split(" ", 1)[0] for line in progress] == ["2/5", "4/5", "5/5"]
    assert "5/5 件を確認、5 件を再送" in progress[-1]
    assert set(states(store.sessions).values()) == {"pending"}


def _outage(
    hub_store: Store, worker: Worker, clock: list[datetime], until: datetime, pause_at: datetime
) -> None:
    """Run the worker through the outage, the simulated clock jumping to the next due retry
    whenever a round has nothing to send; the operator pauses at ``pause_at``."""
    paused = False
    while clock[0] < until:
        if not paused and clock[0] >= pause_at:
            with hub_store.sessions.begin() as session:
                operations.pause(session, "tainou", reason="障害のため保留", now=clock[0])
            paused = True
        if worker.run_once():
            continue
        clock[0] = min(clock[0] + timedelta(minutes=1), until)


def test_golden_week_outage_pause_after_the_fact_resume_and_redeliver_all(
    store: Store,  # noqa: F811
    store_settings: Settings,
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """The whole runbook (docs/operations.md, 長期障害): 8 subjects × 3 notices to 滞納管理,
    down (connection refused) from Friday 18:00. With the default policy (12 attempts, ≤10
    min apart) the first of each subject was dead by ``attempts`` within half an hour; now
    the destination is held (the circuit breaker) and one delivery probes it, uncounted:
    nothing is dead. The operator pauses at +20 min, the system is back five days later,
    resume sends everything at once: each notice arrives once, in order per subject."""
    tainou = receivers("tainou")
    start = datetime.now(UTC) - timedelta(days=5, minutes=30)
    clock = [start]
    worker = outage_worker(store, tainou.url, clock, RetryPolicy())
    sent: dict[str, list[str]] = {}
    for _ in range(3):
        for subject in (f"S{i}" for i in range(8)):
            message, _ids = add_message(store.sessions, subject, ("tainou",), now=start)
            sent.setdefault(subject, []).append(message)
    _outage(store, worker, clock, start + timedelta(minutes=40), start + timedelta(minutes=20))
    with store.sessions() as session:
        dead = operations.list_dead(session, destination="tainou")
    assert dead == []  # all 8 subject heads were dead by attempts at +40 min before
    assert Counter(states(store.sessions).values()) == {"pending": 24}
    listed = _cli(store_settings, "destinations", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    retrying = sum(1 for d in _all(store) if d.state == "pending" and d.attempts)
    assert row["destination"] == "tainou" and row["paused"] and row["reason"] == "障害のため保留"
    assert (row["waiting"], row["retrying"], row["dead"]) == (24, retrying, 0)
    assert retrying == 1  # the one probe; the others were never tried
    table = _cli(store_settings, "destinations", "list")
    assert "一時停止中" in table.stdout and "tainou" in table.stdout
    clock[0] = datetime.now(UTC)  # five days later: the system is back
    tainou.start()
    with store.sessions.begin() as session:
        operations.resume(session, "tainou", reason="復旧", now=clock[0])
    while worker.run_once():
        pass
    assert set(states(store.sessions).values()) == {"delivered"}
    received = tainou.applied()
    assert sorted(received) == sorted(m for ms in sent.values() for m in ms)  # each once
    for messages in sent.values():
        positions = [received.index(m) for m in messages]
        assert positions == sorted(positions)
