"""A dispatch round's database work, batched: audit records appended per tenant in one go
(heads locked once, in tenant order), a batch's outcomes recorded together (delivered,
retried, dead, lease lost), and the next batch claimed in the same transaction. SQLite and
PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bus.config.models import HubConfig
from bus.dispatch.claims import Job, claim_jobs
from bus.dispatch.transport import Outcome, SendResult
from bus.dispatch.worker import Worker
from bus.settings import Settings
from bus.store.audit import AuditEntry, append_audits, verify_chain
from bus.store.db import Store, open_store
from bus.store.models import AuditHead, AuditRecord, Delivery, DeliveryAttempt, StoredMessage
from tests.test_dispatch import TENANT, add_message, hub_config


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def test_append_audits_chains_each_tenant_in_order(store: Store) -> None:
    entries = [
        AuditEntry("412066", "delivered", "m-1", {"n": 1}, "w"),
        AuditEntry("414247", "delivered", "m-2", {"n": 2}, "w"),
        AuditEntry("412066", "dead", "m-3", {"n": 3}, "w"),
    ]
    with store.sessions.begin() as session:
        written = append_audits(session, entries)
    assert [(v["tenant"], v["seq"]) for v in written] == [
        ("412066", 1),
        ("414247", 1),
        ("412066", 2),
    ]
    assert written[2]["prev_hash"] == written[0]["hash"]
    with store.sessions.begin() as session:
        append_audits(session, [AuditEntry("414247", "delivered", "m-4")])
    with store.sessions() as session:
        for tenant, length in (("412066", 2), ("414247", 2)):
            report = verify_chain(session, tenant)
            assert report.ok and report.records == length
        assert session.get_one(AuditHead, "412066").seq == 2
        events = session.scalars(
            select(AuditRecord.event).where(AuditRecord.tenant == "412066").order_by("seq")
        ).all()
        assert events == ["delivered", "dead"]


def test_concurrent_batches_over_the_same_tenants_never_deadlock(
    store_settings: Settings,
) -> None:
    """Each batch names the same tenants in its own random order; the heads are locked in
    tenant order, so on PostgreSQL no two transactions wait on each other in a cycle (they
    did when every record locked its tenant's head as it came)."""
    tenants = ["412066", "412074", "412091", "414239"]
    stores = [open_store(store_settings) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(target: Store, seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        try:
            for _ in range(15):
                order = rng.sample(tenants, len(tenants))
                with target.sessions.begin() as session:
                    append_audits(session, [AuditEntry(t, "delivered", f"m-{seed}") for t in order])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(s, i)) for i, s in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        with stores[0].sessions() as session:
            for tenant in tenants:
                report = verify_chain(session, tenant)
                assert report.ok and report.records == 4 * 15
    finally:
        for s in stores:
            s.close()


class Scripted:
    """A transport answering per messageId."""

    def __init__(self, answers: dict[str, SendResult]) -> None:
        self.answers = answers

    def send(self, message: object, endpoint: object) -> SendResult:
        return self.answers[message.message_id]  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


def _config() -> HubConfig:
    return hub_config({"juki": "http://127.0.0.1:9/juki", "zeimu": "http://127.0.0.1:9/zeimu"})


def test_a_batch_records_every_kind_of_outcome_together(store: Store) -> None:
    delivered, _ = add_message(store.sessions, "A", ("juki",))
    retried, _ = add_message(store.sessions, "B", ("juki",))
    refused, _ = add_message(store.sessions, "C", ("zeimu",))
    answers = {
        delivered: SendResult(Outcome.DELIVERED),
        retried: SendResult(Outcome.RETRY, error="HTTP 503 Service Unavailable"),
        refused: SendResult(Outcome.PERMANENT, error="HTTP 400 Bad Request"),
    }
    worker = Worker(
        store.sessions,
        _config,
        None,
        "w",
        transports={"http": Scripted(answers)},
        send_concurrency=1,
    )
    assert worker.run_once() == 3
    with store.sessions() as session:
        rows = dict(
            session.execute(
                select(StoredMessage.message_id, Delivery).join(
                    StoredMessage, StoredMessage.id == Delivery.message_pk
                )
            ).all()
        )
        assert rows[delivered].state == "delivered" and rows[delivered].attempts == 1
        assert rows[delivered].finished_at is not None and rows[delivered].lease_owner is None
        assert rows[retried].state == "pending" and rows[retried].attempts == 1
        assert rows[retried].last_error == "HTTP 503 Service Unavailable"
        assert rows[retried].first_attempt_at is not None
        assert rows[refused].state == "dead"
        assert rows[refused].last_error == "HTTP 400 Bad Request"
        attempts = session.execute(
            select(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt, DeliveryAttempt.outcome)
        ).all()
        assert sorted((a, o) for _, a, o in attempts) == [
            (1, "delivered"),
            (1, "permanent"),
            (1, "retry"),
        ]
        events = {
            message_id: event
            for message_id, event in session.execute(
                select(AuditRecord.message_id, AuditRecord.event)
            )
        }
        assert events == {delivered: "delivered", refused: "dead"}  # a retry is not audited
        assert verify_chain(session, TENANT).ok
    worker.close()


def test_a_lost_lease_drops_only_its_own_outcome(store: Store) -> None:
    mine, (kept,) = add_message(store.sessions, "A", ("juki",))
    theirs, (taken,) = add_message(store.sessions, "B", ("juki",))
    worker = Worker(store.sessions, _config, None, "w", transports={})
    with store.sessions.begin() as session:
        jobs = claim_jobs(session, "w", datetime.now(UTC), timedelta(seconds=30), 10)
    assert {job.delivery_id for job in jobs} == {kept, taken}
    with store.sessions.begin() as session:  # another worker took one over
        session.get_one(Delivery, taken).lease_owner = "other"
    worker._record([(job, SendResult(Outcome.DELIVERED)) for job in jobs], _config())
    with store.sessions() as session:
        assert session.get_one(Delivery, kept).state == "delivered"
        assert session.get_one(Delivery, taken).state == "pending"
        assert session.get_one(Delivery, taken).lease_owner == "other"
        assert session.scalars(select(AuditRecord.message_id)).all() == [mine]
    assert theirs != mine


@pytest.mark.ordering
def test_the_next_batch_is_claimed_with_the_outcomes_and_released_on_close(store: Store) -> None:
    first, (a1,) = add_message(store.sessions, "A", ("juki",))
    second, (a2,) = add_message(store.sessions, "A", ("juki",))
    answers = {first: SendResult(Outcome.DELIVERED), second: SendResult(Outcome.DELIVERED)}
    worker = Worker(
        store.sessions, _config, None, "w", transports={"http": Scripted(answers)}, batch=5
    )
    assert worker.run_once() == 1  # A#1 only: A#2 waits for it …
    assert [job.delivery_id for job in worker._next] == [a2]  # … and was claimed with its outcome
    with store.sessions() as session:
        assert session.get_one(Delivery, a2).lease_owner == "w"
    worker.close()  # stopping: the claimed but unsent batch is released, not left to its lease
    with store.sessions() as session:
        assert session.get_one(Delivery, a2).lease_owner is None
        assert session.get_one(Delivery, a1).state == "delivered"


def test_claim_jobs_returns_what_sending_needs(store: Store) -> None:
    message_id, (delivery,) = add_message(store.sessions, "A", ("zeimu",))
    with store.sessions.begin() as session:
        (job,) = claim_jobs(session, "w", datetime.now(UTC), timedelta(seconds=30), 10)
    assert job == Job(
        delivery,
        message_id,
        None,
        "ResidentChangeNotice",
        TENANT,
        "zeimu",
        job.body,
    )
    assert message_id.encode() in job.body


class Timed:
    """A transport that answers after ``delay`` seconds, noting the thread of each send."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.threads: list[int] = []

    def send(self, message: object, endpoint: object) -> SendResult:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        return SendResult(Outcome.DELIVERED)

    def close(self) -> None:
        pass


def _round(store: Store, transport: Timed, jobs: int, **worker_options: Any) -> float:
    """One round of ``jobs`` deliveries (one subject each) on 4 send lanes: its seconds."""
    for index in range(jobs):
        add_message(store.sessions, f"S{index}", ("juki",))
    worker = Worker(
        store.sessions,
        _config,
        None,
        "w",
        transports={"http": transport},
        send_concurrency=4,
        **worker_options,
    )
    try:
        started = time.perf_counter()
        assert worker.run_once() == jobs
        return time.perf_counter() - started
    finally:
        worker.close()


def test_a_round_of_quick_sends_stays_on_one_lane(store: Store) -> None:
    transport = Timed(0.0)
    # a round whose sends all end within the solo time; a long one, so that a busy machine
    # (the suite runs on two processes) cannot stretch 20 instant sends past it
    _round(store, transport, 20, solo_seconds=30.0)
    assert len(transport.threads) == 20
    assert len(set(transport.threads)) == 1  # one lane; the worker's thread only waits
    assert threading.get_ident() not in transport.threads


def test_a_round_of_slow_sends_brings_the_other_lanes_in(store: Store) -> None:
    transport = Timed(0.25)
    seconds = _round(store, transport, 8)
    assert len(set(transport.threads)) == 4  # the first lane and three more joined it
    assert seconds < 8 * 0.25 / 2, seconds  # alone it would take 2 s; four lanes ~0.55 s
