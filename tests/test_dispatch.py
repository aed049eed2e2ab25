"""Dispatch: claims, order per subject, leases, retries, the Dead Letter Channel, pause,
wake-ups, and the operator commands, against real stores (SQLite file; PostgreSQL +
RabbitMQ) and real recording receivers running as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bus.config.models import Endpoint, HubConfig, RetryPolicy, System, Tenant
from bus.dispatch import operations
from bus.dispatch.claims import claim, paused_destinations
from bus.dispatch.retry import backoff, decide
from bus.dispatch.wakeup import Wakeups
from bus.dispatch.worker import Worker, WorkerPool
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.db import Store, open_store
from bus.store.models import AuditRecord, Delivery, DeliveryAttempt, StoredMessage
from bus.store.queries import show_message
from tests.support.envelopes import set_relates_to
from tests.support.juki_config import write_juki_config
from tests.support.receivers import Receiver, receiver_factory, wait_for
from tests.support.receivers import free_port as free_port  # re-exported for other modules

ROOT = Path(__file__).resolve().parent.parent
TENANT = "414247"
FAST = RetryPolicy(
    max_attempts=50,
    base_delay=timedelta(milliseconds=20),
    max_delay=timedelta(milliseconds=200),
)


# --- helpers ------------------------------------------------------------------------------


receivers = pytest.fixture(receiver_factory, name="receivers")


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def hub_config(urls: dict[str, str], policy: RetryPolicy = FAST, timeout: float = 5.0) -> HubConfig:
    return HubConfig(
        tenants=(Tenant(code=TENANT, name="江北町"),),
        systems=tuple(
            System(
                id=name,
                name=name,
                endpoint=Endpoint(transport="http", url=url, timeout_seconds=timeout),
                retry=policy,
            )
            for name, url in urls.items()
        ),
    )


def body(message_id: str, subject: str, issued: int) -> bytes:
    """A small platform message: the receiver reads its Header (ids, subject, issuedAt)."""
    at = (datetime(2026, 4, 1, tzinfo=UTC) + timedelta(seconds=issued)).isoformat()
    return (
        '<env:PlatformMessage xmlns:env="urn:renkei:platform:envelope:1"><env:Header>'
        f"<env:messageId>{message_id}</env:messageId>"
        "<env:service><env:name>ResidentChangeNotice</env:name><env:version>1.0</env:version>"
        f"</env:service><env:client><env:tenant>{TENANT}</env:tenant>"
        "<env:system>juki</env:system></env:client>"
        f"<env:subject>{subject}</env:subject><env:issuedAt>{at}</env:issuedAt>"
        "</env:Header></env:PlatformMessage>"
    ).encode()


_issued = iter(range(10**9))


def add_message(
    sessions: sessionmaker[Session],
    subject: str,
    destinations: tuple[str, ...],
    *,
    message_id: str | None = None,
    now: datetime | None = None,
) -> tuple[str, list[int]]:
    """Insert a stored message and its deliveries (next sequence per key), as the Store
    stage does; returns (messageId, delivery ids)."""
    message_id = message_id or str(uuid.uuid4())
    now = now or datetime.now(UTC)
    with sessions.begin() as session:
        stored = StoredMessage(
            message_id=message_id,
            tenant=TENANT,
            system="juki",
            service="ResidentChangeNotice",
            kind="notification",
            subject=subject,
            body=body(message_id, subject, next(_issued)),
            body_digest="0" * 64,
            received_at=now,
        )
        session.add(stored)
        session.flush()
        ids = []
        for destination in destinations:
            last = session.scalar(
                select(func.max(Delivery.sequence)).where(
                    Delivery.tenant == TENANT,
                    Delivery.destination == destination,
                    Delivery.subject_key == subject,
                )
            )
            delivery = Delivery(
                message_pk=stored.id,
                destination=destination,
                tenant=TENANT,
                subject_key=subject,
                sequence=(last or 0) + 1,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            session.add(delivery)
            session.flush()
            ids.append(delivery.id)
    return message_id, ids


def states(sessions: sessionmaker[Session]) -> dict[int, str]:
    with sessions() as session:
        return dict(session.execute(select(Delivery.id, Delivery.state)).all())


def drain(worker: Worker, until: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        if not worker.run_once():
            time.sleep(0.02)


def audit_events(
    sessions: sessionmaker[Session], chain: str | None = None
) -> list[tuple[str, str | None]]:
    """The events of the tenant chains (default) or of one ``chain`` (e.g. ``admin``)."""
    statement = select(AuditRecord.event, AuditRecord.message_id).order_by(AuditRecord.id)
    if chain is None:
        statement = statement.where(AuditRecord.tenant != ADMIN_CHAIN)
    else:
        statement = statement.where(AuditRecord.tenant == chain)
    with sessions() as session:
        return list(session.execute(statement))


# --- claims ------------------------------------------------------------------------------


@pytest.mark.ordering
def test_claim_keeps_order_per_subject_and_lets_others_flow(store: Store) -> None:
    a1 = add_message(store.sessions, "A", ("juki",))[1][0]
    a2 = add_message(store.sessions, "A", ("juki",))[1][0]
    b1 = add_message(store.sessions, "B", ("juki",))[1][0]
    ay = add_message(store.sessions, "A", ("zeimu",))[1][0]  # same subject, other destination
    now, lease = datetime.now(UTC), timedelta(seconds=30)
    with store.sessions.begin() as session:
        first = {d.id for d in claim(session, "w1", now, lease, 10, set())}
    assert first == {a1, b1, ay}  # one per subject and destination; A#2 waits for A#1
    with store.sessions.begin() as session:
        assert claim(session, "w2", now, lease, 10, set()) == []  # A#1 leased: A#2 still waits
    with store.sessions.begin() as session:
        session.get_one(Delivery, a1).state = "delivered"
    with store.sessions.begin() as session:
        assert [d.id for d in claim(session, "w2", now, lease, 10, set())] == [a2]


@pytest.mark.ordering
def test_dead_blocks_its_subject_until_discarded_and_paused_is_skipped(store: Store) -> None:
    a1 = add_message(store.sessions, "A", ("juki",))[1][0]
    a2 = add_message(store.sessions, "A", ("juki",))[1][0]
    b1 = add_message(store.sessions, "B", ("zeimu",))[1][0]
    with store.sessions.begin() as session:
        session.get_one(Delivery, a1).state = "dead"
    now, lease = datetime.now(UTC), timedelta(seconds=30)
    with store.sessions.begin() as session:
        operations.pause(session, "zeimu", reason="計画停止", actor="ops")
    with store.sessions() as session:
        assert paused_destinations(session) == {"zeimu"}
    with store.sessions.begin() as session:
        assert claim(session, "w", now, lease, 10, paused_destinations(session)) == []
    with store.sessions.begin() as session:
        assert operations.discard(session, [a1, a2], reason="重複送信") == [a1]  # only dead
        operations.resume(session, "zeimu", actor="ops")
    with store.sessions.begin() as session:
        claimed = {d.id for d in claim(session, "w", now, lease, 10, paused_destinations(session))}
    assert claimed == {a2, b1}
    events = [event for event, _ in audit_events(store.sessions)]
    assert events == ["paused", "discarded", "resumed"]


def test_not_due_is_not_claimed(store: Store) -> None:
    future = datetime.now(UTC) + timedelta(minutes=5)
    add_message(store.sessions, "A", ("juki",), now=future)
    with store.sessions.begin() as session:
        assert claim(session, "w", datetime.now(UTC), timedelta(seconds=30), 10, set()) == []


def test_expired_lease_is_claimed_again_and_a_late_result_dropped(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    x = receivers("juki").start()
    _message_id, (delivery,) = add_message(store.sessions, "A", ("juki",))
    config = hub_config({"juki": x.url})
    now = datetime.now(UTC)
    lease = timedelta(seconds=30)
    with store.sessions.begin() as session:
        assert [d.id for d in claim(session, "dead-worker", now, lease, 10, set())] == [delivery]
    with store.sessions.begin() as session:  # still leased
        assert claim(session, "w2", now + timedelta(seconds=29), lease, 10, set()) == []
    later = now + timedelta(seconds=31)
    rescuer = Worker(store.sessions, lambda: config, None, "rescuer", clock=lambda: later)
    assert rescuer.run_once() == 1
    assert states(store.sessions) == {delivery: "delivered"}
    assert len(x.applied()) == 1
    # the first worker comes back with a result: it no longer holds the lease → dropped
    ghost = Worker(store.sessions, lambda: config, None, "dead-worker")
    from bus.dispatch.transport import Outcome, SendResult
    from bus.dispatch.worker import Job

    job = Job(delivery, "m", None, "ResidentChangeNotice", TENANT, "juki", b"")
    ghost._record([(job, SendResult(Outcome.PERMANENT, error="late"))], config)
    assert states(store.sessions) == {delivery: "delivered"}


def test_a_slow_round_keeps_its_leases_and_nothing_is_sent_twice(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    """A destination answering in 0.3 s, one round of 6 on one lane (1.8 s) and a 0.9 s
    lease: the sending worker renews its round's leases, so the idle worker never claims them
    and sends them again (it did, round after round: each worker's outcomes were dropped as
    lost and the queue never drained)."""
    x = receivers("juki").start("--delay", "0.3")
    config = hub_config({"juki": x.url})
    sent = [add_message(store.sessions, f"S{i}", ("juki",))[0] for i in range(6)]
    options = {"lease_seconds": 0.9, "batch": 6, "send_concurrency": 1, "poll_seconds": 0.05}
    with WorkerPool(2, store.sessions, lambda: config, None, **options):
        wait_for(lambda: set(states(store.sessions).values()) == {"delivered"}, timeout=30)
    assert sorted(r["messageId"] for r in x.records()) == sorted(sent)  # each once


def test_stopping_ends_a_round_after_the_sends_in_flight(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    """SIGTERM stops the pool: the round under way sends nothing more, records what it sent
    and releases the rest at once, instead of sending its whole batch first (50 deliveries
    to a slow system outlived serve's wait, and were left leased and sent again later)."""
    x = receivers("juki").start("--delay", "0.5")
    config = hub_config({"juki": x.url})
    for i in range(10):
        add_message(store.sessions, f"S{i}", ("juki",))
    pool = WorkerPool(1, store.sessions, lambda: config, None, send_concurrency=1)
    pool.start()
    wait_for(lambda: len(x.records()) >= 1, timeout=10)
    started = time.monotonic()
    pool.stop()
    assert time.monotonic() - started < 2.5  # the send in flight, not the other 8 or 9
    with store.sessions() as session:
        rows = session.execute(select(Delivery.state, Delivery.lease_owner)).all()
    delivered = sum(state == "delivered" for state, _ in rows)
    assert delivered == len(x.records()) < 10  # what was sent is recorded
    assert all(owner is None for _, owner in rows)  # the rest released, not left leased


# --- retries and the Dead Letter Channel ---------------------------------------------------


def test_backoff_has_full_jitter_and_respects_the_cap() -> None:
    import random

    policy = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=60))
    rng = random.Random(7)
    delays = [backoff(policy, 3, rng).total_seconds() for _ in range(500)]
    assert 0 <= min(delays) < 0.5 and 3.5 < max(delays) <= 4.0  # uniform in [0, 4]
    assert max(backoff(policy, 40, rng).total_seconds() for _ in range(200)) <= 60


def test_retry_decision_limits_by_attempts_age_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=5, max_age=timedelta(hours=1))
    start = datetime(2026, 4, 1, tzinfo=UTC)
    assert decide(policy, attempts=5, first_attempt_at=start, now=start).reason == "attempts"
    late = start + timedelta(hours=1)
    assert decide(policy, attempts=2, first_attempt_at=start, now=late).reason == "age"
    soon = decide(policy, attempts=1, first_attempt_at=start, now=start, retry_after_seconds=120)
    assert soon.next_attempt_at == start + timedelta(seconds=120)
    near_end = start + timedelta(minutes=59)
    capped = decide(
        policy, attempts=2, first_attempt_at=start, now=near_end, retry_after_seconds=3600
    )
    assert not capped.dead and capped.next_attempt_at == start + timedelta(hours=1)


def test_temporary_failures_retry_then_dead_letter_with_history(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    x = receivers("juki").start("--fail-status", "503")
    policy = RetryPolicy(
        max_attempts=3, base_delay=timedelta(milliseconds=10), max_delay=timedelta(milliseconds=30)
    )
    message_id, (delivery,) = add_message(store.sessions, "A", ("juki",))
    worker = Worker(store.sessions, lambda: hub_config({"juki": x.url}, policy), None, "w")
    drain(worker, lambda: states(store.sessions)[delivery] == "dead")
    with store.sessions() as session:
        (dead,) = operations.list_dead(session)
    assert (dead.id, dead.message_id, dead.attempts) == (delivery, message_id, 3)
    assert [(h.attempt, h.outcome, h.error) for h in dead.history] == [
        (n, "retry", "HTTP 503 Service Unavailable") for n in (1, 2, 3)
    ]
    assert audit_events(store.sessions) == [("dead", message_id)]


def test_age_limit_dead_letters(store: Store, receivers: Callable[[str], Receiver]) -> None:
    x = receivers("juki").start("--fail-status", "500")
    policy = RetryPolicy(
        max_attempts=1000, max_age=timedelta(seconds=1), base_delay=timedelta(milliseconds=50)
    )
    _message_id, (delivery,) = add_message(store.sessions, "A", ("juki",))
    worker = Worker(store.sessions, lambda: hub_config({"juki": x.url}, policy), None, "w")
    drain(worker, lambda: states(store.sessions)[delivery] == "dead", timeout=15)
    with store.sessions() as session:
        row = session.get_one(Delivery, delivery)
        assert 2 <= row.attempts < 100
        assert row.finished_at is not None and row.first_attempt_at is not None
        span = row.finished_at - row.first_attempt_at
        assert timedelta(seconds=1) <= span < timedelta(seconds=3)


@pytest.mark.poison
def test_permanent_refusal_is_dead_at_once(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    poison = str(uuid.uuid4())
    x = receivers("juki").start("--fail-message-ids", poison)
    _mid, (delivery,) = add_message(store.sessions, "A", ("juki",), message_id=poison)
    worker = Worker(store.sessions, lambda: hub_config({"juki": x.url}), None, "w")
    assert worker.run_once() == 1
    with store.sessions() as session:
        row = session.get_one(Delivery, delivery)
        assert (row.state, row.attempts) == ("dead", 1)
        assert row.last_error == "HTTP 400 Bad Request"


@pytest.mark.poison
def test_poison_waits_its_subject_others_flow_then_redelivery_releases_it(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    poison = str(uuid.uuid4())
    x = receivers("juki").start("--fail-message-ids", poison)
    config = hub_config({"juki": x.url})
    sessions = store.sessions
    add_message(sessions, "P", ("juki",))  # P#1 fine
    _, (poisoned,) = add_message(sessions, "P", ("juki",), message_id=poison)  # P#2 always fails
    after = [add_message(sessions, "P", ("juki",))[0] for _ in range(3)]  # P#3..#5 must wait
    others = [add_message(sessions, f"S{i % 7}", ("juki",))[0] for i in range(40)]
    with WorkerPool(3, sessions, lambda: config, Wakeups(), poll_seconds=0.1):
        wait_for(lambda: set(others) <= set(x.applied()))
        wait_for(lambda: states(sessions)[poisoned] == "dead")
        time.sleep(0.3)
        assert not set(after) & set(x.applied())  # the subject waits behind its dead letter
        # the fix: the receiver accepts the message now; an operator redelivers
        x.stop()
        x.start()
        with sessions.begin() as session:
            assert operations.redeliver(session, [poisoned], reason="受信側修正") == [poisoned]
        wait_for(lambda: set(after) <= set(x.applied()))
    p_order = [r["messageId"] for r in x.records() if r.get("subject") == "P" and r["applied"]]
    assert p_order[1:] == [poison, *after]
    assert all(r["in_order"] for r in x.records() if r["applied"])
    assert len(x.applied()) == len(set(x.applied())) == 45
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Delivery.state != "delivered")) == 0
        history = session.scalars(
            select(DeliveryAttempt.outcome)
            .where(DeliveryAttempt.delivery_id == poisoned)
            .order_by(DeliveryAttempt.id)
        ).all()
    assert history == ["permanent", "delivered"]
    events = [e for e, m in audit_events(sessions) if m == poison]
    assert events == ["dead", "redelivered", "delivered"]


# --- outage and pause ---------------------------------------------------------------------


@pytest.mark.outage
def test_outage_then_recovery_delivers_all_and_never_delays_others(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    down, up = receivers("down"), receivers("up").start()  # "down" is not listening yet
    config = hub_config({"down": down.url, "up": up.url})
    sent = [add_message(store.sessions, f"S{i % 10}", ("down", "up"))[0] for i in range(60)]
    with WorkerPool(2, store.sessions, lambda: config, Wakeups(), poll_seconds=0.1):
        elapsed = wait_for(lambda: len(up.applied()) == 60, timeout=20)
        assert elapsed < 5, f"the healthy destination waited {elapsed:.1f}s"
        assert down.records() == []
        down.start()
        wait_for(lambda: len(down.applied()) == 60, timeout=30)
    for receiver in (down, up):
        records = receiver.records()
        assert sorted(receiver.applied()) == sorted(sent)
        assert all(r["in_order"] for r in records if r["applied"])
    with store.sessions() as session:
        attempts = session.scalar(
            select(func.max(Delivery.attempts)).where(Delivery.destination == "down")
        )
    assert attempts is not None and attempts >= 2


@pytest.mark.outage
def test_paused_destination_waits_without_burning_attempts(
    store: Store, receivers: Callable[[str], Receiver]
) -> None:
    x, y = receivers("juki").start(), receivers("zeimu").start()
    config = hub_config({"juki": x.url, "zeimu": y.url})
    with store.sessions.begin() as session:
        operations.pause(session, "juki", reason="計画停止", tenants=[TENANT])
    for i in range(5):
        add_message(store.sessions, f"S{i}", ("juki", "zeimu"))
    worker = Worker(store.sessions, lambda: config, None, "w")
    drain(worker, lambda: len(y.applied()) == 5)
    for _ in range(3):
        worker.run_once()
    assert x.records() == []
    with store.sessions() as session:
        assert (
            session.scalars(select(Delivery.attempts).where(Delivery.destination == "juki")).all()
            == [0] * 5
        )
    with store.sessions.begin() as session:
        operations.resume(session, "juki", tenants=[TENANT])
    drain(worker, lambda: len(x.applied()) == 5)


# --- wake-ups -----------------------------------------------------------------------------


def test_memory_wakeups_are_shared_in_process_and_not_lost() -> None:
    store_side, worker_side = Wakeups("memory://"), Wakeups("memory://")
    worker_side.wait(0)  # catch up with earlier tests' notifications in this process
    assert not worker_side.wait(0.05)
    store_side.notify(["juki"])  # before the wait: remembered, not lost
    assert worker_side.wait(0.05)
    assert not worker_side.wait(0.05)
    woke: list[float] = []

    def waiter() -> None:
        start = time.monotonic()
        if worker_side.wait(5):
            woke.append(time.monotonic() - start)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    store_side.notify(["juki"])
    thread.join()
    assert woke and woke[0] < 1


WAITER = """
import sys, time
from bus.dispatch.wakeup import Wakeups
w = Wakeups(sys.argv[1])
assert w.start(10)
print("ready", flush=True)
start = time.monotonic()
print("woke" if w.wait(10) else "timeout", round(time.monotonic() - start, 3), flush=True)
w.close()
"""


@pytest.mark.postgres
def test_rabbitmq_wakeups_reach_every_worker_process(rabbitmq_url: str) -> None:
    waiters = [
        subprocess.Popen(
            [sys.executable, "-c", WAITER, rabbitmq_url], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for waiter in waiters:
            assert waiter.stdout is not None and waiter.stdout.readline().strip() == "ready"
        notifier = Wakeups(rabbitmq_url)
        notifier.notify(["juki"])
        notifier.close()
        for waiter in waiters:
            out, _ = waiter.communicate(timeout=15)
            word, seconds = out.split()
            assert word == "woke" and float(seconds) < 2
    finally:
        for waiter in waiters:
            waiter.kill()
            waiter.wait()


@pytest.mark.postgres
def test_worker_wakes_on_notify_not_on_poll(
    store: Store, store_settings: Settings, receivers: Callable[[str], Receiver]
) -> None:
    x = receivers("juki").start()
    config = hub_config({"juki": x.url})
    wakeups = Wakeups(store_settings.broker_url)
    with WorkerPool(1, store.sessions, lambda: config, wakeups, poll_seconds=30):
        time.sleep(0.5)  # the worker is idle, waiting
        message_id, _ = add_message(store.sessions, "A", ("juki",))
        notifier = Wakeups(store_settings.broker_url)
        notifier.notify(["juki"])
        notifier.close()
        assert wait_for(lambda: x.applied() == [message_id], timeout=10) < 3
    wakeups.close()


# --- operator commands --------------------------------------------------------------------


def _cli(settings: Settings, *args: str) -> Any:
    from bus.cli import app

    env = {"RENKEI_DATA_DIR": str(settings.data_dir), "RENKEI_BROKER_URL": settings.broker_url}
    if settings.database_url:
        env["RENKEI_DATABASE_URL"] = settings.database_url
    return CliRunner().invoke(app, list(args), env=env)


def test_worker_refuses_sqlite(tmp_path: Path) -> None:
    result = _cli(Settings(data_dir=tmp_path / "data"), "worker", "--concurrency", "2")
    assert result.exit_code == 2
    assert "PostgreSQL" in result.output and "renkei serve" in result.output


def test_dlq_commands(store: Store, store_settings: Settings) -> None:
    ids = [add_message(store.sessions, "A", ("juki",))[1][0] for _ in range(3)]
    with store.sessions.begin() as session:
        for delivery in ids[:2]:
            row = session.get_one(Delivery, delivery)
            row.state, row.attempts, row.last_error = "dead", 12, "HTTP 503 Service Unavailable"
    listed = _cli(store_settings, "dlq", "list", "--destination", "juki", "--json")
    assert listed.exit_code == 0, listed.output
    assert [d["id"] for d in json.loads(listed.stdout)] == ids[:2]
    first = _cli(store_settings, "dlq", "list", "--limit", "1", "--json")
    assert [d["id"] for d in json.loads(first.stdout)] == ids[:1]
    assert "--limit" in first.stderr  # more than shown: said, not silently cut
    assert "--limit" not in _cli(store_settings, "dlq", "list", "--limit", "2").stderr
    assert (
        json.loads(_cli(store_settings, "dlq", "list", "--tenant", "011002", "--json").stdout) == []
    )
    redone = _cli(store_settings, "dlq", "redeliver", str(ids[0]), "--reason", "受信側修正")
    assert redone.exit_code == 0, redone.output
    refused = _cli(store_settings, "dlq", "discard", str(ids[2]), "--reason", "juki")
    assert refused.exit_code == 1  # not dead: nothing discarded, and said so
    gone = _cli(store_settings, "dlq", "discard", str(ids[1]), "--reason", "取消済み")
    assert gone.exit_code == 0, gone.output
    assert states(store.sessions) == {ids[0]: "pending", ids[1]: "discarded", ids[2]: "pending"}
    with store.sessions() as session:
        assert session.get_one(Delivery, ids[0]).attempts == 0
    paused = _cli(store_settings, "destinations", "pause", "juki", "--reason", "計画停止")
    assert paused.exit_code == 0, paused.output
    with store.sessions() as session:
        assert paused_destinations(session) == {"juki"}
    assert _cli(store_settings, "destinations", "resume", "juki").exit_code == 0
    with store.sessions() as session:
        assert paused_destinations(session) == set()
    events = [e for e, _ in audit_events(store.sessions)]
    # pause/resume are audited in the chain of every tenant juki serves (six sample towns)
    assert events == ["redelivered", "discarded"] + ["paused"] * 6 + ["resumed"] * 6
    admin = [e for e, _ in audit_events(store.sessions, ADMIN_CHAIN) if e != "config.apply"]
    assert admin == [  # and once each in the admin chain
        "dlq.redelivered",
        "dlq.discarded",
        "destination.paused",
        "destination.resumed",
    ]


def test_destinations_refuse_a_system_that_is_not_configured(
    store: Store, store_settings: Settings
) -> None:
    """As the console's 404: no pause recorded for a typo (nor a metrics label), the real
    zeimu untouched; resume takes only a configured system or one still paused."""
    for name in ("ZEIMU", "税務<script>"):
        refused = _cli(store_settings, "destinations", "pause", name, "--reason", "typo")
        assert refused.exit_code == 1 and "paused" not in refused.stdout
        assert "RK-TEN005" in refused.stderr and f"System {name} is not" in refused.stderr
        assert f"システム {name} は設定にありません" in refused.stderr
    unknown = _cli(store_settings, "destinations", "resume", "ZEIMU", "--reason", "typo")
    assert unknown.exit_code == 1 and "RK-TEN005" in unknown.stderr
    with store.sessions() as session:
        assert paused_destinations(session) == set()
    assert audit_events(store.sessions) == []
    with store.sessions.begin() as session:  # paused, then removed from the configuration
        operations.pause(session, "retired", reason="保守", tenants=[])
    resumed = _cli(store_settings, "destinations", "resume", "retired", "--reason", "廃止")
    assert resumed.exit_code == 0, resumed.output
    with store.sessions() as session:
        assert paused_destinations(session) == set()


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("", "RK-CON002"),
        (" ", "RK-CON002"),
        ("   ", "RK-CON002"),
        ("\u3000\t", "RK-CON002"),
        ("x" * 201, "RK-CON002"),
        ("復旧後\x00に再送", "RK-CON010"),  # PostgreSQL refuses NUL in text
        ("復旧後\x1b[2Jに再送", "RK-CON010"),  # a terminal escape, for whoever reads the audit
        ("復旧後\u202eに再送", "RK-CON010"),  # reads as other words in the audit display
    ],
)
def test_operator_commands_refuse_a_blank_long_or_unusable_reason(
    store: Store, store_settings: Settings, reason: str, code: str
) -> None:
    """The console's rules: blank after stripping, or over 200 characters (RK-CON002); a
    control or text-direction character (RK-CON010)."""
    dead = add_message(store.sessions, "A", ("juki",))[1][0]
    with store.sessions.begin() as session:
        session.get_one(Delivery, dead).state = "dead"
    for command in (
        ("dlq", "redeliver", str(dead)),
        ("dlq", "discard", str(dead)),
        ("destinations", "pause", "juki"),
        ("destinations", "resume", "juki"),
    ):
        refused = _cli(store_settings, *command, "--reason", reason)
        assert refused.exit_code == 2, (command, refused.output)
        assert code in refused.output, command
        assert not isinstance(refused.exception, ValueError)
    assert states(store.sessions) == {dead: "dead"}
    with store.sessions() as session:
        assert paused_destinations(session) == set()
    assert audit_events(store.sessions) == []
    assert [e for e, _ in audit_events(store.sessions, ADMIN_CHAIN) if e != "config.apply"] == []


def test_operator_reason_is_recorded_as_the_console_records_it(
    store: Store, store_settings: Settings
) -> None:
    dead = add_message(store.sessions, "A", ("juki",))[1][0]
    with store.sessions.begin() as session:
        session.get_one(Delivery, dead).state = "dead"
    longest = "理" * 200
    assert _cli(store_settings, "dlq", "discard", str(dead), "--reason", longest).exit_code == 0
    paused = _cli(store_settings, "destinations", "pause", "juki", "--reason", "  計画\n停止 ")
    assert paused.exit_code == 0, paused.output
    with store.sessions() as session:
        details = session.scalars(
            select(AuditRecord.detail)
            .where(AuditRecord.event.in_(["dlq.discarded", "destination.paused"]))
            .order_by(AuditRecord.id)
        ).all()
    assert [d["reason"] for d in details] == [longest, "計画 停止"]


def test_dlq_refuses_an_id_not_in_the_dead_letter_channel(
    store: Store, store_settings: Settings
) -> None:
    pending = add_message(store.sessions, "A", ("juki",))[1][0]
    for action in ("redeliver", "discard"):
        refused = _cli(store_settings, "dlq", action, "999", str(pending), "--reason", "x")
        assert refused.exit_code == 1, refused.output
        for delivery in (999, pending):
            assert f"RK-STO006 配信 {delivery} は配信不能" in refused.stderr
            assert f"Delivery {delivery} is not in the Dead Letter Channel." in refused.stderr
    assert states(store.sessions) == {pending: "pending"}


@pytest.mark.postgres
def test_worker_process_delivers_and_can_be_killed(
    postgres_url: str, rabbitmq_url: str, receivers: Callable[[str], Receiver], tmp_path: Path
) -> None:
    """`renkei worker` on PostgreSQL: SIGKILLed mid-run, restarted, nothing lost."""
    store_settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, broker_url=rabbitmq_url
    )
    store = open_store(store_settings)
    x = receivers("juki").start("--delay", "0.01")
    config_dir = write_juki_config(tmp_path / "config", x.url, TENANT)
    env = {
        **os.environ,
        "RENKEI_DATABASE_URL": store_settings.effective_database_url,
        "RENKEI_BROKER_URL": store_settings.broker_url,
        "RENKEI_CONFIG_DIR": str(config_dir),
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
    }
    sent = [add_message(store.sessions, f"S{i % 5}", ("juki",))[0] for i in range(150)]
    command = [str(Path(sys.executable).parent / "renkei"), "worker", "--concurrency", "2"]
    command += ["--lease-seconds", "2"]
    worker = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        wait_for(lambda: len(x.applied()) >= 20, timeout=30)
        worker.kill()
        worker.wait()
        worker = subprocess.Popen(command, env=env, cwd=ROOT)
        wait_for(lambda: set(sent) <= set(x.applied()), timeout=60)
    finally:
        worker.terminate()
        worker.wait(15)
        store.close()
    assert worker.returncode == 0  # SIGTERM: a clean stop
    assert sorted(x.applied()) == sorted(sent)
    assert all(r["in_order"] for r in x.records() if r["applied"])


# --- end to end: Validate → Route → Store → workers → receivers ------------------------------


def test_pipeline_to_receivers_with_a_correction_following_its_original(
    store: Store, store_settings: Settings, receivers: Callable[[str], Receiver]
) -> None:

    from bus.catalogue import NS_ENVELOPE
    from bus.config.index import ConfigIndex
    from bus.config.snapshots import load_directory
    from bus.pipeline import Message
    from bus.routing import RouteStage, stored_destinations
    from bus.samplegen.messages import MessageSpec, build_message, serialize
    from bus.samplegen.values import TOWNS
    from bus.store.ingest import StoreStage
    from bus.validation.stage import ValidateStage
    from bus.validation.validator import Validator

    hub = receivers("hub").start()  # one process plays every system (path = system id)
    sample = load_directory(ROOT / "samples" / "config").config
    systems = tuple(
        s.model_copy(
            update={
                "endpoint": Endpoint(transport="http", url=f"http://127.0.0.1:{hub.port}/{s.id}"),
                "retry": FAST,
            }
        )
        for s in sample.systems
    )
    index = ConfigIndex(sample.model_copy(update={"systems": systems}))
    wakeups = Wakeups(store_settings.broker_url)
    stages = [
        ValidateStage(Validator()),
        RouteStage(index.route, stored_destinations(store.sessions)),
        StoreStage(store.sessions, wakeups, index.retention),
    ]

    def ingest(data: bytes) -> Message:
        message = Message(raw=data, adapter="test")
        for stage in stages:
            message = stage(message)
        assert not message.rejected and message.ack is not None, message.findings
        return message

    documents = [
        build_message(MessageSpec("ResidentChangeNotice", seed, TOWNS[seed % 3]))
        for seed in range(12)
    ]
    accepted = [ingest(serialize(document)) for document in documents]
    # a 訂正 of the first message: it follows the original to the original's destinations
    correction = documents[0]
    header = correction.find(f"{{{NS_ENVELOPE}}}Header")
    assert header is not None
    original_id = accepted[0].envelope.message_id  # type: ignore[union-attr]
    header.find(f"{{{NS_ENVELOPE}}}messageId").text = str(uuid.uuid4())  # type: ignore[union-attr]
    set_relates_to(header, original_id)
    header.find(f"{{{NS_ENVELOPE}}}issuedAt").text = "2026-04-02T09:00:00+09:00"  # type: ignore[union-attr]
    fix = ingest(serialize(correction))
    assert [d.destination for d in fix.deliveries] == [
        d.destination for d in accepted[0].deliveries
    ]
    assert all(d.sequence == 2 for d in fix.deliveries)  # after the original, per subject
    expected = {
        (d.destination, m.envelope.message_id)  # type: ignore[union-attr]
        for m in [*accepted, fix]
        for d in m.deliveries
    }
    assert len(expected) >= 3 * 13  # zeimu, kokuho, shuno take all; kotei and tainou some
    with WorkerPool(2, store.sessions, lambda: index, wakeups, poll_seconds=0.2):
        wait_for(lambda: len(hub.applied()) == len(expected), timeout=30)
    wakeups.close()
    records = hub.records()
    assert {(r["system"], r["messageId"]) for r in records if r["applied"]} == expected
    assert all(r["in_order"] for r in records if r["applied"])
    firsts = [r for r in records if r["messageId"] in (original_id, fix.envelope.message_id)]  # type: ignore[union-attr]
    for system in {d.destination for d in fix.deliveries}:
        assert [r["relatesTo"] for r in firsts if r["system"] == system] == [None, original_id]


def test_message_detail_says_why_a_pending_delivery_waits(store: Store) -> None:
    """Behind a dead letter of its subject, or its destination paused: the operator saw only
    'pending, 0 attempts, next attempt in the past'."""
    first, (dead,) = add_message(store.sessions, "A", ("juki",))
    second, _ = add_message(store.sessions, "A", ("juki",))
    other, _ = add_message(store.sessions, "B", ("juki",))
    with store.sessions.begin() as session:
        session.get_one(Delivery, dead).state = "dead"

    def waiting(message_id: str) -> list[str | None]:
        with store.sessions() as session:
            return [d.waiting_for for d in show_message(session, message_id).deliveries]

    assert waiting(first) == [None] and waiting(other) == [None]
    assert waiting(second) == [f"#{dead} dead"]
    with store.sessions.begin() as session:
        operations.pause(session, "juki", reason="計画停止", tenants=[TENANT])
    assert waiting(other) == ["paused"] and waiting(second) == ["paused"]
