"""Dispatch workers (DESIGN §1 stage 8): Competing Consumers over the database-as-queue.

A worker claims a batch of deliveries (with a lease), sends each through its destination's
transport and records the outcome in one transaction per delivery: delivered, retry later
(exponential back-off with jitter), or dead (Dead Letter Channel). Every attempt is appended
to ``delivery_attempts``. A worker killed mid-send simply loses its lease: after expiry the
delivery is claimed again (at-least-once; receivers deduplicate by messageId). A late result
from a worker whose lease was taken over is dropped, never recorded over the new owner's.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from bus.config.models import HubConfig, RetryPolicy, System
from bus.dispatch.claims import claim, paused_destinations
from bus.dispatch.operations import record_audit
from bus.dispatch.retry import decide
from bus.dispatch.transport import (
    OutboundMessage,
    Outcome,
    SendResult,
    Transport,
    UnknownTransport,
    transport_for,
)
from bus.dispatch.wakeup import Wakeups
from bus.store.models import Delivery, DeliveryAttempt, DeliveryState, StoredMessage

log = logging.getLogger(__name__)


class SystemLookup(Protocol):
    """What a worker needs of the configuration (``ConfigIndex`` has it)."""

    def system(self, system_id: str) -> System | None: ...


ConfigSource = Callable[[], "HubConfig | SystemLookup"]


def find_system(config: HubConfig | SystemLookup, system_id: str) -> System | None:
    if isinstance(config, HubConfig):
        return next((s for s in config.systems if s.id == system_id), None)
    try:
        return config.system(system_id)
    except KeyError:
        return None


def utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; everything stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def default_worker_id(index: int = 0) -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{index}"


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery with what sending it needs, read in the claim transaction."""

    delivery_id: int
    message_id: str
    correlation_id: str | None
    service: str
    tenant: str
    destination: str
    body: bytes


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: ConfigSource,
        wakeups: Wakeups | None,
        worker_id: str,
        *,
        lease_seconds: float = 30,
        batch: int = 50,
        transports: Mapping[str, Transport] | None = None,
        poll_seconds: float = 1.0,
        send_concurrency: int = 8,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.wakeups = wakeups
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        self.transports = transports
        self.poll_seconds = poll_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rng = rng or random.Random()
        self.send_concurrency = send_concurrency
        self._executor: ThreadPoolExecutor | None = None

    # --- one round ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim one batch, send it, record the outcomes; returns how many were attempted.

        A batch holds at most one delivery per subject (see :mod:`bus.dispatch.claims`), so
        its sends may run concurrently without breaking order. Once a destination answers
        "retry later", the batch's remaining deliveries to it are released unattempted: an
        outage costs one probe, not a timeout per delivery, and burns no attempts."""
        jobs = self._claim()
        if not jobs:
            return 0
        config = self.config()
        failing: set[str] = set()

        def attempt(job: Job) -> SendResult | None:
            if job.destination in failing:
                return None
            result = self._send(job, config)
            if result.outcome is Outcome.RETRY:
                failing.add(job.destination)
            return result

        if self.send_concurrency > 1 and len(jobs) > 1:
            results = list(self._pool().map(attempt, jobs))
        else:
            results = [attempt(job) for job in jobs]
        done = [(job, result) for job, result in zip(jobs, results, strict=True) if result]
        skipped = [job for job, result in zip(jobs, results, strict=True) if result is None]
        self._record(done, config)
        if skipped:
            self._release(skipped)
        return len(done)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.send_concurrency, thread_name_prefix=f"renkei-send-{self.worker_id}"
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _claim(self) -> list[Job]:
        now = self._clock()
        with self.sessions.begin() as session:
            rows = claim(
                session, self.worker_id, now, self.lease, self.batch, paused_destinations(session)
            )
            if not rows:
                return []
            messages = {
                m.id: m
                for m in session.scalars(
                    select(StoredMessage).where(StoredMessage.id.in_({r.message_pk for r in rows}))
                )
            }
            return [
                Job(
                    delivery_id=row.id,
                    message_id=messages[row.message_pk].message_id,
                    correlation_id=messages[row.message_pk].correlation_id,
                    service=messages[row.message_pk].service,
                    tenant=row.tenant,
                    destination=row.destination,
                    body=messages[row.message_pk].body,
                )
                for row in rows
            ]

    def _release(self, jobs: Sequence[Job]) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_([job.delivery_id for job in jobs]),
                    Delivery.lease_owner == self.worker_id,
                )
                .values(lease_owner=None, lease_expires_at=None)
            )

    def _send(self, job: Job, config: HubConfig | SystemLookup) -> SendResult:
        system = find_system(config, job.destination)
        if system is None or system.endpoint is None:
            return SendResult(Outcome.RETRY, error=f"no endpoint configured for {job.destination}")
        try:
            transport = (
                self.transports[system.endpoint.transport]
                if self.transports is not None
                else transport_for(system.endpoint)
            )
        except (KeyError, UnknownTransport):
            return SendResult(Outcome.RETRY, error=f"unknown transport {system.endpoint.transport}")
        outbound = OutboundMessage(
            message_id=job.message_id,
            correlation_id=job.correlation_id,
            service=job.service,
            tenant=job.tenant,
            destination=job.destination,
            body=job.body,
        )
        try:
            return transport.send(outbound, system.endpoint)
        except Exception as error:
            log.exception("transport %s failed", system.endpoint.transport)
            return SendResult(Outcome.RETRY, error=f"transport error: {type(error).__name__}")

    def _record(
        self, done: Sequence[tuple[Job, SendResult]], config: HubConfig | SystemLookup
    ) -> None:
        """Each outcome with its attempt row and audit record, atomically. The batch's
        outcomes share one commit (grouped for throughput; each stays all-or-nothing). An
        outcome for a delivery whose lease another worker has taken over is dropped."""
        if not done:
            return
        now = self._clock()
        with self.sessions.begin() as session:
            owned = {
                row.id: row
                for row in session.execute(
                    select(Delivery.id, Delivery.attempts, Delivery.first_attempt_at)
                    .where(
                        Delivery.id.in_([job.delivery_id for job, _ in done]),
                        Delivery.lease_owner == self.worker_id,
                        Delivery.state == DeliveryState.PENDING.value,
                    )
                    .with_for_update()
                )
            }
            changes: list[dict[str, Any]] = []
            attempts: list[dict[str, Any]] = []
            for job, result in done:
                row = owned.get(job.delivery_id)
                if row is None:
                    log.warning("delivery %s: lease lost, result dropped", job.delivery_id)
                    continue
                number = row.attempts + 1
                first = utc(row.first_attempt_at) if row.first_attempt_at else now
                attempts.append(
                    {
                        "delivery_id": job.delivery_id,
                        "attempt": number,
                        "at": now,
                        "outcome": result.outcome.value,
                        "error": result.error,
                    }
                )
                change = self._outcome(job, result, number, first, now, config)
                changes.append(change)
                if change["state"] == DeliveryState.DELIVERED.value:
                    self._audit(session, job, "delivered", attempts=number)
                elif change["state"] == DeliveryState.DEAD.value:
                    self._audit(
                        session,
                        job,
                        "dead",
                        attempts=number,
                        reason=change.pop("_reason"),
                        error=result.error,
                    )
            if changes:
                session.execute(update(Delivery), changes)  # bulk UPDATE by primary key
                session.execute(insert(DeliveryAttempt), attempts)

    def _outcome(
        self,
        job: Job,
        result: SendResult,
        number: int,
        first: datetime,
        now: datetime,
        config: HubConfig | SystemLookup,
    ) -> dict[str, Any]:
        """The delivery's new columns: delivered, retry later (back-off), or dead (the Dead
        Letter Channel; it holds its subject until redelivered or discarded)."""
        change: dict[str, Any] = {
            "id": job.delivery_id,
            "attempts": number,
            "first_attempt_at": first,
            "lease_owner": None,
            "lease_expires_at": None,
            "state": DeliveryState.PENDING.value,
            "finished_at": None,
            "last_error": result.error,
        }
        if result.outcome is Outcome.DELIVERED:
            change.update(state=DeliveryState.DELIVERED.value, finished_at=now, last_error=None)
            return change
        if result.outcome is Outcome.PERMANENT:
            change.update(state=DeliveryState.DEAD.value, finished_at=now, _reason="permanent")
            return change
        system = find_system(config, job.destination)
        decision = decide(
            system.retry if system is not None else RetryPolicy(),
            attempts=number,
            first_attempt_at=first,
            now=now,
            retry_after_seconds=result.retry_after_seconds,
            rng=self._rng,
        )
        if decision.dead:
            change.update(state=DeliveryState.DEAD.value, finished_at=now, _reason=decision.reason)
        else:
            change["next_attempt_at"] = decision.next_attempt_at
        return change

    def _audit(self, session: Session, job: Job, event: str, **detail: object) -> None:
        record_audit(
            session,
            tenant=job.tenant,
            event=event,
            message_id=job.message_id,
            actor=self.worker_id,
            detail={"delivery": job.delivery_id, "destination": job.destination, **detail},
        )

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Claim and send until ``stop`` is set; sleep on wake-ups with a poll fallback (which
        also picks up retries that became due and deliveries whose lease expired)."""
        if self.wakeups is not None:
            self.wakeups.start()
        try:
            while not stop.is_set():
                try:
                    attempted = self.run_once()
                except Exception:
                    log.exception("worker %s: round failed", self.worker_id)
                    stop.wait(self.poll_seconds)
                    continue
                if attempted:
                    continue  # a delivered message may have released its subject's next one
                if self.wakeups is not None:
                    self.wakeups.wait(self.poll_seconds)
                else:
                    stop.wait(self.poll_seconds)
        finally:
            self.close()


class WorkerPool:
    """``size`` workers on threads (``renkei serve``'s in-process workers, ``renkei worker``)."""

    def __init__(
        self,
        size: int,
        sessions: sessionmaker[Session],
        config: ConfigSource,
        wakeups: Wakeups | None,
        *,
        name: str | None = None,
        **options: object,
    ) -> None:
        prefix = name or default_worker_id().rsplit(":", 1)[0]
        self.workers = [
            Worker(sessions, config, wakeups, f"{prefix}:{i}", **options)  # type: ignore[arg-type]
            for i in range(size)
        ]
        self.wakeups = wakeups
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for worker in self.workers:
            thread = threading.Thread(
                target=worker.run,
                args=(self._stop,),
                name=f"renkei-{worker.worker_id}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current sends (a lease left behind simply expires)."""
        self._stop.set()
        if self.wakeups is not None:
            self.wakeups.interrupt()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
