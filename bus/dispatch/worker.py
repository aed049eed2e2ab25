"""Dispatch workers (DESIGN §1 stage 8): Competing Consumers over the database-as-queue.

A worker claims a batch of deliveries (with a lease), sends them through their destinations'
transports (concurrently when they are slow: a batch holds at most one delivery per subject)
and records the outcomes: delivered, retry later (exponential back-off with jitter), or dead
(Dead Letter Channel). Every attempt is appended to ``delivery_attempts``. A batch's outcomes,
their attempt rows and audit records are written in one transaction, which also claims the
next batch: one commit per round. A worker killed mid-send simply loses its lease: after expiry the
delivery is claimed again (at-least-once; receivers deduplicate by messageId). A late result
from a worker whose lease was taken over is dropped, never recorded over the new owner's.
A live worker keeps the leases of the round it is sending (:class:`_LeaseKeeper`), so a slow
destination's long round is not taken over and sent again while it is still under way.
A round whose outcomes cannot be recorded because the store does not answer keeps them
(:class:`_Unrecorded`): the worker's first transaction once the store answers records them
and releases whatever else is still leased to it, instead of leaving them to their lease.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic, perf_counter
from typing import Protocol, cast

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bus.config.models import Direction, HubConfig, RetryPolicy, System
from bus.dispatch import heartbeat as heartbeats
from bus.dispatch.claims import Job, claim_jobs
from bus.dispatch.outcomes import Failure, hold_destinations, last_holds, record_outcomes
from bus.dispatch.pauses import PauseWatch
from bus.dispatch.retry import decide, decide_unreachable, hold_after
from bus.dispatch.transport import (
    OutboundMessage,
    Outcome,
    SendResult,
    Transport,
    UnknownTransport,
    destination_wide,
    transport_for,
)
from bus.dispatch.transport import transports as transports_made
from bus.dispatch.wakeup import Wakeups
from bus.mapping.stage import OutboundTranslationError, outbound_body
from bus.observability.events import delivery_context, round_committed
from bus.observability.logs import bound, get_logger
from bus.store.audit import append_audits
from bus.store.clock import database_now
from bus.store.db import unreachable_finding
from bus.store.models import Delivery, DeliveryState
from bus.store.writers import write_transaction

log = get_logger(__name__)


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


def no_longer_receives(config: HubConfig | SystemLookup, job: Job) -> str | None:
    """Why ``job`` must not be sent under the configuration in force, or None: its
    destination no longer receives its service for its tenant (the town left a shared
    system, its ``receive`` grant was narrowed, the system was removed). Deliveries are
    routed at ingest; one stored before such a change — pending, redelivered from the Dead
    Letter Channel, added by ``messages replay`` — would otherwise carry the town's data to
    a system no longer acting for it. Only pushed notifications are deliveries (inquiries go
    to their provider synchronously, feeds are read under the entitlement in force), and
    every destination is a configured system: none is exempt. A bare :class:`HubConfig`
    (tools and tests without an index) has no grants looked up: the hub's workers always
    get the :class:`~bus.config.index.ConfigIndex`."""
    allowed = getattr(config, "allowed", None)
    if allowed is None or allowed(job.destination, Direction.RECEIVE, job.service, job.tenant):
        return None
    return f"no longer receives {job.service} for tenant {job.tenant}"


def in_flight_limits(config: HubConfig | SystemLookup) -> dict[str, int]:
    """Each system's ``max_in_flight`` (同時送信数の上限), for those that have one: what
    :func:`~bus.dispatch.claims.claim_jobs` keeps their leases within. Empty (the claim as
    ever) when none has, or for a bare look-up that cannot list its systems."""
    hub = config if isinstance(config, HubConfig) else getattr(config, "config", None)
    if not isinstance(hub, HubConfig):
        return {}
    return {s.id: s.max_in_flight for s in hub.systems if s.max_in_flight is not None}


def default_worker_id(index: int = 0) -> str:
    return f"{_process_owner(os.getpid())}{index}"


def _process_owner(pid: int) -> str:
    """The start of the worker ids of process ``pid`` on this host."""
    return f"{socket.gethostname()[:40]}:{pid}:"


def release_process_claims(sessions: sessionmaker[Session], pid: int) -> int:
    """Make what the workers of process ``pid`` (this host) had claimed claimable at once;
    returns how many. Only for a process known to have exited: otherwise its leases hold
    until they expire (``RENKEI_DISPATCH_LEASE_SECONDS``). A delivery it had sent but not yet
    recorded is sent again, as after an expired lease (receivers are idempotent)."""
    owner = _process_owner(pid)
    statement = (
        update(_DELIVERIES)
        .where(_DELIVERIES.c.lease_owner.startswith(owner, autoescape=True))
        .values(lease_owner=None, lease_expires_at=None)
    )
    with write_transaction(sessions) as session:
        return int(session.connection().execute(statement).rowcount)


__all__ = ["Job", "Worker", "WorkerPool"]  # Job lives in bus.dispatch.claims

#: How long a round's sends run on one lane before its other send lanes join.
SOLO_SECONDS = 0.05
#: How long a round waits for sends still under way once nothing else is left to send: those
#: still going then are carried over (:class:`_Flight`), the round is recorded and the next
#: one claimed, so a destination answering after 20–60 s does not hold every other one's.
CARRY_SECONDS = 1.0
#: How long stopping waits, once it has ended the sends still under way, for their release.
ABANDON_SECONDS = 5.0

_DELIVERIES = cast(Table, Delivery.__table__)
_RENEW = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        _DELIVERIES.c.lease_owner == bindparam("owner"),
        _DELIVERIES.c.state == DeliveryState.PENDING.value,
    )
    .values(lease_expires_at=bindparam("expires"))
)
_RELEASE = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        _DELIVERIES.c.lease_owner == bindparam("owner"),
    )
    .values(lease_owner=None, lease_expires_at=None)
)
#: Everything still leased to a worker (after an outage: see :class:`_Unrecorded`).
_RELEASE_ALL = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.state == DeliveryState.PENDING.value,
        _DELIVERIES.c.lease_owner == bindparam("owner"),
    )
    .values(lease_owner=None, lease_expires_at=None)
)


@dataclass(slots=True)
class _Unrecorded:
    """What a worker could not record because the store did not answer (an
    ``OperationalError`` in the round's transaction): the outcomes of the sends it made, kept
    to be recorded once the store answers rather than sent again after their leases expire
    (their subjects' next messages waiting all that time). Their leases, and any others the
    worker may hold unbeknown to it (a commit whose answer was lost), are released in that
    same transaction: nothing is sent twice by this worker, and an outcome for a lease
    another worker has taken over meanwhile is dropped as ever."""

    done: list[tuple[Job, SendResult]] = field(default_factory=list)
    seconds: dict[int, float] = field(default_factory=dict)


class _Round:
    """The sends of one round on lanes (:meth:`Worker._fan_out`), guarded by the worker's
    :attr:`_Flight.changed`."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = jobs
        self.results: list[SendResult | None] = [None] * len(jobs)
        self.queue = list(range(len(jobs)))  # not started yet, in claim order
        self.started: dict[int, float] = {}  # under way: index → monotonic() at its start
        self.carried: set[int] = set()  # delivery ids of the sends carried over
        self.lanes = 0  # lanes still taking this round's jobs
        self.closed = False


class _Flight:
    """A worker's sends under way, across rounds. A destination whose sends outlive their
    rounds has at most ``cap`` of them (half the lanes), and within a round the other
    destinations' jobs go first past that: a system answering after 20–60 s never takes
    every lane, nor (:meth:`saturated`) every batch. A send still going when its round ends
    is carried over: its lease is kept (:class:`_LeaseKeeper`) and its result recorded by a
    later round (:meth:`take_landed`). At most ``limit`` (the lanes) are carried at once;
    beyond that a round waits for its sends, as it always did."""

    def __init__(self, lanes: int) -> None:
        self.cap = max(1, lanes // 2)
        self.limit = lanes
        self.changed = threading.Condition(threading.Lock())  # not reentrant: cheaper
        self._sending: Counter[str] = Counter()  # destination → sends under way
        self._carried: dict[int, Job] = {}  # delivery id → a send that outlived its round
        self._landed: list[tuple[Job, SendResult | None]] = []  # carried, ended, unrecorded

    def start(self, state: _Round) -> int | None:
        """The next job a lane of ``state`` is to send (marked under way), or None: the
        lane ends (nothing left, or only jobs waiting for their destination's sends)."""
        with self.changed:
            index = None if state.closed else self._pick(state)
            if index is None:
                state.lanes -= 1
                if not state.lanes:
                    self.changed.notify_all()
                return None
            self._sending[state.jobs[index].destination] += 1
            state.started[index] = monotonic()
            return index

    def _pick(self, state: _Round) -> int | None:
        """The first queued job whose destination has fewer than ``cap`` sends under way;
        failing that, the first whose destination has none carried over (a round to one
        destination still uses every lane, but one whose sends outlive rounds never gets
        more than ``cap``)."""
        fallback = None
        for position, index in enumerate(state.queue):
            destination = state.jobs[index].destination
            if self._sending[destination] < self.cap:
                return state.queue.pop(position)
            if fallback is None and not self._carrying(destination):
                fallback = position
        return None if fallback is None else state.queue.pop(fallback)

    def _carrying(self, destination: str) -> bool:
        return any(job.destination == destination for job in self._carried.values())

    def end(self, state: _Round, index: int, result: SendResult | None) -> bool:
        """Record a send's end; True when it had been carried over (its lane then ends)."""
        job = state.jobs[index]
        with self.changed:
            self._sending[job.destination] -= 1
            if not self._sending[job.destination]:
                del self._sending[job.destination]
            if self._carried.pop(job.delivery_id, None) is not None:
                self._landed.append((job, result))
                state.lanes -= 1
                return True
            del state.started[index]
            state.results[index] = result
            if not state.started and not state.queue:  # the round's last send
                self.changed.notify_all()
            return False

    def may_carry(self, state: _Round, after: float) -> bool:
        """Whether ``state`` may end now (the caller holds :attr:`changed`): every send under
        way has run ``after`` seconds and can be carried, or nothing runs and no lane is
        left (the jobs still queued wait for sends of an earlier round)."""
        if not state.started:
            return state.lanes == 0
        now = monotonic()
        return len(self._carried) + len(state.started) <= self.limit and all(
            now - began >= after for began in state.started.values()
        )

    def carry(self, state: _Round) -> None:
        """End ``state``: its sends under way are carried over, its queued jobs not sent."""
        for index in state.started:
            job = state.jobs[index]
            self._carried[job.delivery_id] = job
            state.carried.add(job.delivery_id)
        if state.started:
            log.info(
                "worker.sends_carried_over",
                count=len(state.started),
                destinations=sorted({state.jobs[i].destination for i in state.started}),
            )
        state.started.clear()
        state.queue.clear()
        state.closed = True

    def take_landed(self) -> list[tuple[Job, SendResult | None]]:
        """The carried sends that have ended since, to be recorded (None: nothing was sent,
        to be released)."""
        with self.changed:
            landed, self._landed = self._landed, []
        return landed

    def held(self) -> list[Job]:
        """The jobs whose leases must be kept for sends carried over."""
        with self.changed:
            return [*self._carried.values(), *(job for job, _ in self._landed)]

    def saturated(self) -> set[str]:
        """The destinations with ``cap`` sends carried over: not to be claimed for now."""
        with self.changed:
            if not self._carried:
                return set()
            carried = Counter(job.destination for job in self._carried.values())
        return {destination for destination, count in carried.items() if count >= self.cap}

    def busy(self) -> bool:
        with self.changed:
            return bool(self._carried or self._landed)


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
        solo_seconds: float = SOLO_SECONDS,
        carry_seconds: float = CARRY_SECONDS,
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
        self._clock = clock  # None: the store's clock (bus/store/clock.py); tests fix one
        self._rng = rng or random.Random()
        self.send_concurrency = send_concurrency
        self.solo_seconds = solo_seconds
        self.carry_seconds = carry_seconds
        self._flight = _Flight(send_concurrency)
        self._seconds: dict[int, float] = {}  # each send's duration until recorded (metrics)
        self._executor: ThreadPoolExecutor | None = None
        self._next: list[Job] = []  # claimed with the previous round's outcomes
        self._unrecorded: _Unrecorded | None = None  # a round the store did not take
        self._leases = _LeaseKeeper(self)
        self._pauses = PauseWatch(sessions)  # paused after the round was claimed
        self._stopping = threading.Event()  # run()'s stop: the round sends nothing more
        self._abandoned = threading.Event()  # stopping gave up on the sends under way
        self.heartbeat: heartbeats.Heartbeat | None = None  # set by WorkerPool (/readyz)
        self._limits_of: object = None  # the configuration _limits_now was read from
        self._limits_now: Mapping[str, int] = {}

    def abandon(self) -> None:
        """Give up on the sends under way (stopping took too long): each transport that can
        ends its exchanges (``interrupt``); their deliveries are released, not counted —
        the system may have received them, and gets them again after a restart (receivers
        deduplicate by messageId)."""
        self._abandoned.set()
        made = self.transports if self.transports is not None else transports_made()
        for transport in made.values():
            interrupt = getattr(transport, "interrupt", None)
            if interrupt is not None:
                interrupt()

    def carried_jobs(self) -> list[Job]:
        """The deliveries of sends carried over from an earlier round (leases kept)."""
        return self._flight.held()

    def beat(self) -> None:
        """This worker is working (bus/dispatch/heartbeat.py)."""
        if self.heartbeat is not None:
            self.heartbeat.beat()

    # --- one round ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Send one batch and record the outcomes; returns how many were recorded.

        The batch is the one claimed when the previous round's outcomes were recorded (or a
        fresh claim). A batch holds at most one delivery per subject (see
        :mod:`bus.dispatch.claims`), so its sends may run concurrently without breaking order.
        Once a destination answers "retry later", the batch's remaining deliveries to it are
        released unattempted: an outage costs one probe, not a timeout per delivery, and burns
        no attempts. Sends carried over from an earlier round (:class:`_Flight`) that have
        ended since are recorded with this round."""
        if self._unrecorded is not None:
            jobs = self._recover(claim_next=not self._stopping.is_set())
        else:
            jobs, self._next = self._next or self._claim(), []
        landed = self._flight.take_landed()
        if not jobs and not landed:
            return 0
        config = self.config()
        failing: set[str] = set()

        def attempt(job: Job) -> SendResult | None:
            if job.destination in failing or self._stopping.is_set():
                return None
            if self._pauses.paused(job.destination):  # released unsent, as "retry later"
                failing.add(job.destination)
                return None
            started = perf_counter()
            with bound(delivery_context(job)):
                # the configuration in force when this send starts, not when its round did:
                # an endpoint changed by `config apply` mid-round (a system replacement)
                # takes the round's later sends with it
                result = self._send(job, self.config())
                if self._abandoned.is_set() and result.outcome is Outcome.RETRY:
                    log.warning("delivery.abandoned_at_stop", error=result.error)
                    return None  # released, no attempt: a later start sends it again
            self._seconds[job.delivery_id] = perf_counter() - started
            self.beat()
            if result.outcome is Outcome.RETRY:
                failing.add(job.destination)
            return result

        self._leases.keep(jobs)
        try:
            if self.send_concurrency > 1 and jobs:
                results, carried = self._fan_out(jobs, attempt)
            else:
                results, carried = [attempt(job) for job in jobs], set()
        finally:
            self._leases.keep(())
        sent = [*zip(jobs, results, strict=True), *landed]
        done = [(job, result) for job, result in sent if result is not None]
        skipped = [job for job, result in sent if result is None and job.delivery_id not in carried]
        seconds = {job.delivery_id: self._seconds.pop(job.delivery_id, 0.0) for job, _ in done}
        try:
            self._next = self._record(
                done,
                config,
                release=skipped,
                claim_next=not self._stopping.is_set(),
                seconds=seconds,
            )
        except OperationalError:  # kept; ``skipped`` is released with them
            self._unrecorded = _Unrecorded(done, seconds)
            raise
        return len(done)

    def _recover(self, *, claim_next: bool) -> list[Job]:
        """The first round after the store failed: record the outcomes kept
        (:class:`_Unrecorded`), release this worker's other leases and claim the next batch,
        in one transaction. Still failing (``OperationalError``): all kept for the next try.
        Any other error drops them (a bug must not wedge the worker): their leases expire."""
        unrecorded = self._unrecorded
        assert unrecorded is not None
        try:
            claimed = self._record(
                unrecorded.done,
                self.config(),
                claim_next=claim_next,
                seconds=unrecorded.seconds,
                release_all=True,
            )
        except OperationalError:
            raise
        except Exception:
            self._unrecorded = None
            raise
        self._unrecorded = None
        if unrecorded.done:
            log.info(
                "worker.outcomes_recorded_late", worker=self.worker_id, count=len(unrecorded.done)
            )
        return claimed

    def _fan_out(
        self, jobs: Sequence[Job], attempt: Callable[[Job], SendResult | None]
    ) -> tuple[list[SendResult | None], set[int]]:
        """Send ``jobs`` on up to ``send_concurrency`` lanes of the pool, each taking the next
        unsent job whose destination has fewer than :attr:`_Flight.cap` sends under way (a
        bulkhead: one slow destination never takes every lane). One lane starts; the others
        join only when the round is still going after ``solo_seconds``: deliveries to
        systems that answer within a millisecond or two then finish on one thread (lanes
        taking turns under the GIL cost a third more CPU per delivery and sent no faster,
        docs/benchmarks.md). This thread only waits: once nothing is left that may start
        and every send under way has run ``carry_seconds``, those are carried over
        (:class:`_Flight`) and the rest released, so the round ends. Returns the results
        (None: not sent, or carried) and the carried delivery ids."""
        state = _Round(jobs)
        flight = self._flight

        def lane() -> None:
            while (index := flight.start(state)) is not None:
                try:
                    result = attempt(jobs[index])
                except BaseException:
                    flight.end(state, index, None)
                    raise
                if flight.end(state, index, result):
                    return  # carried over: this lane no longer belongs to the round

        def add_lanes(count: int) -> None:
            state.lanes += count  # the caller holds flight.changed
            for _ in range(count):
                self._pool().submit(lane)

        began = monotonic()
        with flight.changed:
            add_lanes(1)
            reinforced = False
            while state.queue or state.started:
                waited = monotonic() - began
                if not reinforced and waited >= self.solo_seconds:
                    add_lanes(min(self.send_concurrency, len(jobs)) - 1)
                    reinforced = True
                if flight.may_carry(state, self.carry_seconds):
                    flight.carry(state)
                    break
                flight.changed.wait(self._next_look(reinforced, waited))
        return state.results, state.carried

    def _next_look(self, reinforced: bool, waited: float) -> float:
        """How long the round's thread may sleep before it must look again unprompted."""
        if not reinforced and waited < self.solo_seconds:
            return self.solo_seconds - waited
        return max(self.carry_seconds / 4, 0.01)

    def _pool(self) -> ThreadPoolExecutor:
        """The send lanes: a round's, and as many again for sends carried over."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                2 * self.send_concurrency, thread_name_prefix=f"renkei-send-{self.worker_id}"
            )
        return self._executor

    def close(self) -> None:
        """Stop sending; a batch claimed but not sent is released (not left to its lease),
        and outcomes kept through an outage are recorded if the store answers by now (else
        their leases expire and they are sent again, as after a crash). Sends carried over
        are waited for (their leases kept meanwhile) and recorded with them."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        landed = self._flight.take_landed()
        if landed:  # recorded, and the rest of this worker's leases released, below
            done = [(job, result) for job, result in landed if result is not None]
            kept = self._unrecorded or _Unrecorded()
            kept.done += done
            kept.seconds.update(
                (job.delivery_id, self._seconds.pop(job.delivery_id, 0.0)) for job, _ in done
            )
            self._unrecorded = kept
        self._leases.close()
        if self._unrecorded is not None:
            try:
                self._recover(claim_next=False)
            except Exception:
                log.warning("worker.record_failed", worker=self.worker_id)
                self._unrecorded = None
        if self._next:
            try:
                with write_transaction(self.sessions) as session:
                    self._release(session, self._next)
            except Exception:
                log.warning("worker.release_failed", worker=self.worker_id)
            self._next = []

    def _claim_in(
        self, session: Session, now: datetime, config: HubConfig | SystemLookup
    ) -> list[Job]:
        """A batch claimed in ``session``, but none of a destination this worker already has
        its share of sends carried over for (:meth:`_Flight.saturated`), nor more of one
        than its ``max_in_flight`` leaves room for."""
        return claim_jobs(
            session,
            self.worker_id,
            now,
            self.lease,
            self.batch,
            exclude=self._flight.saturated(),
            limits=self._limits(config),
        )

    def _limits(self, config: HubConfig | SystemLookup) -> Mapping[str, int]:
        """The ``max_in_flight`` of each system that has one, read once per configuration."""
        if config is not self._limits_of:
            self._limits_of, self._limits_now = config, in_flight_limits(config)
        return self._limits_now

    def _claim(self) -> list[Job]:
        config = self.config()  # before the write lock: it may read the store
        try:
            with write_transaction(self.sessions) as session:
                now = self._now(session.connection())
                return self._claim_in(session, now, config)
        except OperationalError:  # its commit may have happened: release what it may hold
            self._unrecorded = _Unrecorded()
            raise

    def _now(self, connection: Connection) -> datetime:
        """The time leases, due times and holds are compared with: the store's clock (in
        scale-out PostgreSQL's, which every worker host shares whatever its own clock says),
        read in the round's transaction."""
        return self._clock() if self._clock is not None else database_now(connection)

    def renew(self, jobs: Sequence[Job]) -> None:
        """Extend the lease of ``jobs`` still held by this worker by a whole lease."""
        with write_transaction(self.sessions) as session:
            connection = session.connection()
            connection.execute(
                _RENEW,
                {
                    "ids": [job.delivery_id for job in jobs],
                    "owner": self.worker_id,
                    "expires": self._now(connection) + self.lease,
                },
            )

    def _release(self, session: Session, jobs: Sequence[Job]) -> None:
        session.connection().execute(
            _RELEASE, {"ids": [job.delivery_id for job in jobs], "owner": self.worker_id}
        )

    def _send(self, job: Job, config: HubConfig | SystemLookup) -> SendResult:
        refused = no_longer_receives(config, job)
        if refused is not None:  # dead-lettered unsent: the town's data stays here
            log.warning("delivery.no_longer_receives", destination=job.destination)
            return SendResult(Outcome.PERMANENT, error=refused)
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
        try:  # translated for the destination if its mapping has this service
            body = outbound_body(system, job.service, job.body)
        except OutboundTranslationError as error:
            return SendResult(Outcome.PERMANENT, error=f"translation: {error}"[:500])
        outbound = OutboundMessage(
            message_id=job.message_id,
            correlation_id=job.correlation_id,
            service=job.service,
            tenant=job.tenant,
            destination=job.destination,
            body=body,
        )
        try:
            return transport.send(outbound, system.endpoint)
        except Exception as error:
            log.exception("delivery.transport_failed", transport=system.endpoint.transport)
            return SendResult(Outcome.RETRY, error=f"transport error: {type(error).__name__}")

    def _record(
        self,
        done: Sequence[tuple[Job, SendResult]],
        config: HubConfig | SystemLookup,
        *,
        release: Sequence[Job] = (),
        claim_next: bool = False,
        seconds: Mapping[int, float] | None = None,
        release_all: bool = False,
    ) -> list[Job]:
        """Each outcome with its attempt row and audit record, atomically: the batch's
        outcomes share one transaction (grouped commits; each stays all-or-nothing with its
        records). An outcome for a delivery whose lease another worker has taken over is
        dropped. The same transaction releases ``release`` (``release_all``: every delivery
        still leased to this worker, after an outage) and, with ``claim_next``, claims
        the next batch (which may be the subjects' next deliveries, now unblocked); that
        batch is returned. The audit heads are locked last, so they are held only briefly."""
        if not done and not release and not claim_next and not release_all:
            return []
        with write_transaction(self.sessions) as session:
            connection = session.connection()
            now = self._now(connection)

            unreachable = {job.destination for job, result in done if destination_wide(result)}
            previous = last_holds(connection, unreachable)  # none read in a healthy round
            holds = _holds(done, config, now, previous)

            def decide_failure(
                job: Job, result: SendResult, number: int, first: datetime, counted: Counted
            ) -> Failure:
                wide = destination_wide(result)  # this failure's, not its destination's
                return self._failure(job, result, number, first, now, config, wide, counted)

            audits = record_outcomes(connection, self.worker_id, done, now, decide_failure)
            if holds:  # before the next claim, which then passes these destinations by
                hold_destinations(connection, holds, unreachable)
            if release:
                self._release(session, release)
            if release_all:  # after the outcomes: they needed their leases
                connection.execute(_RELEASE_ALL, {"owner": self.worker_id})
            claimed = self._claim_in(session, now, config) if claim_next else []
            append_audits(session, audits)
        round_committed(done, seconds or {}, audits, now)  # metrics and log lines
        for destination, (until, _) in sorted(holds.items()):
            log.info(
                "destination.held",
                destination=destination,
                until=until.isoformat(),
                unreachable=destination in unreachable,
            )
        return claimed

    def _failure(
        self,
        job: Job,
        result: SendResult,
        number: int,
        first: datetime,
        now: datetime,
        config: HubConfig | SystemLookup,
        unreachable: bool,
        counted: Counted,
    ) -> Failure:
        """A temporary failure: retry later with back-off, or dead when the attempts or the
        age are exhausted. ``unreachable``: the destination could not be reached and is held
        (the circuit breaker): the attempt is not counted and the delivery is its next probe.
        The attempts that count are read (``counted``) only once ``max_attempts`` is
        reached."""
        system = find_system(config, job.destination)
        policy = system.retry if system is not None else RetryPolicy()
        if unreachable:
            decision = decide_unreachable(policy, first_attempt_at=first, now=now)
        else:
            decision = decide(
                policy,
                attempts=number if number < policy.max_attempts else counted(),
                first_attempt_at=first,
                now=now,
                retry_after_seconds=result.retry_after_seconds,
                rng=self._rng,
            )
        if decision.dead:
            return Failure(dead=True, reason=decision.reason, counted=decision.counted)
        return Failure(
            dead=False, next_attempt_at=decision.next_attempt_at, counted=decision.counted
        )

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Claim and send until ``stop`` is set; sleep on wake-ups with a poll fallback (which
        also picks up retries that became due and deliveries whose lease expired). Once
        ``stop`` is set, the round under way starts no more sends: those in flight finish and
        are recorded, the rest are released, so stopping takes one send, not a round."""
        self._stopping = stop
        if self.wakeups is not None:
            self.wakeups.start()
        outage = _Outage(self.worker_id)
        try:
            while not stop.is_set():
                self.beat()
                try:
                    attempted = self.run_once()
                except OperationalError as error:  # the database is gone, locked, refusing
                    outage.failed(error)
                    stop.wait(self.poll_seconds)
                    continue
                except Exception:
                    log.exception("worker.round_failed", worker=self.worker_id)
                    stop.wait(self.poll_seconds)
                    continue
                outage.passed()
                if attempted:
                    continue  # a delivered message may have released its subject's next one
                # sends carried over: their results are recorded soon after they end
                idle = min(self.poll_seconds, 0.1) if self._flight.busy() else self.poll_seconds
                if self.wakeups is not None:
                    self.wakeups.wait(idle)
                else:
                    stop.wait(idle)
        finally:
            self.close()


Counted = Callable[[], int]
"""The attempts of a delivery that count toward ``max_attempts`` (reads its attempt rows)."""

#: ``held_reason`` of a circuit-breaker hold; its length is read back to grow the next one.
_BREAKER_REASON = "unreachable, held {seconds} s: {error}"
_BREAKER_LENGTH = re.compile(r"unreachable, held ([0-9.e+]+) s: ")


def _holds(
    done: Sequence[tuple[Job, SendResult]],
    config: HubConfig | SystemLookup,
    now: datetime,
    previous: Mapping[str, tuple[datetime, str | None]] | None = None,
) -> dict[str, tuple[datetime, str]]:
    """The destinations to send nothing for a while, each with the end of the wait and why:
    those that asked for it (``Retry-After`` with a retry; the latest asked for) and those
    that could not be reached (:func:`~bus.dispatch.transport.destination_wide`: the circuit
    breaker, :func:`_breaker_hold`), whichever ends later; no later than the system's age
    limit (no delivery waits longer than that either)."""
    holds: dict[str, tuple[datetime, str]] = {}

    def hold(destination: str, until: datetime, reason: str) -> None:
        if destination not in holds or holds[destination][0] < until:
            holds[destination] = (until, reason)

    for job, result in done:
        if result.outcome is not Outcome.RETRY:
            continue
        system = find_system(config, job.destination)
        policy = system.retry if system is not None else RetryPolicy()
        seconds = result.retry_after_seconds
        if seconds is not None and seconds > 0:
            wait = min(seconds, policy.max_age.total_seconds())
            until = now + timedelta(seconds=wait)
            hold(job.destination, until, f"{result.error}; Retry-After {wait:.0f} s")
        if destination_wide(result):
            last = (previous or {}).get(job.destination)
            length = _breaker_hold(policy, now, last)
            reason = _BREAKER_REASON.format(
                seconds=f"{length.total_seconds():g}", error=result.error
            )
            hold(job.destination, now + length, reason)
    return holds


def _breaker_hold(
    policy: RetryPolicy, now: datetime, last: tuple[datetime, str | None] | None
) -> timedelta:
    """How long to hold a destination found unreachable: twice its last circuit-breaker hold
    when that one ended less than ``max_delay`` ago (the outage goes on: the probe after it
    failed), else ``base_delay`` (a new outage); at most ``max_delay``. Nothing resets it on
    a delivery (no statement on the healthy path): a new outage within ``max_delay`` of the
    last hold goes on from there."""
    previous = None
    if last is not None:
        until, reason = last
        found = _BREAKER_LENGTH.match(reason or "")
        if found is not None:
            try:
                length = timedelta(seconds=float(found.group(1)))
            except (ValueError, OverflowError):  # not one this worker wrote
                length = None
            if length is not None and now - until <= policy.max_delay:
                previous = length
    return hold_after(policy, previous)


class _Outage:
    """A worker's rounds failing because the database does not answer (connections
    terminated, server down, a lock or statement timeout): one coded warning when it starts
    (RK-OPS001, the driver's reason, no traceback; RK-OPS013 when another process holds the
    SQLite store's lock) and one when a round succeeds again, not a
    traceback per round and poll. The outcomes of a round that could not be recorded are kept
    and recorded by the first round that succeeds (:class:`_Unrecorded`)."""

    def __init__(self, worker_id: str) -> None:
        self._worker_id = worker_id
        self._since: float | None = None
        self._rounds = 0
        self._code = "RK-OPS001"

    def failed(self, error: OperationalError) -> None:
        self._rounds += 1
        if self._since is not None:
            return
        self._since = perf_counter()
        original = error.orig if error.orig is not None else error
        first = str(original).splitlines()[0] if str(original) else ""
        reason = f"{type(original).__name__}: {first}"
        self._code = unreachable_finding(error, reason).code
        log.warning(
            "worker.database_unavailable",
            code=self._code,
            worker=self._worker_id,
            error=reason[:200],
        )

    def passed(self) -> None:
        if self._since is None:
            return
        log.warning(
            "worker.database_available",
            code=self._code,
            worker=self._worker_id,
            seconds=round(perf_counter() - self._since, 1),
            failed_rounds=self._rounds,
        )
        self._since, self._rounds = None, 0


class _LeaseKeeper:
    """Renews the leases of the round a worker is sending, every third of a lease, on a
    thread of its own (started with the first round): a round of slow sends — 50 deliveries
    to a system answering in 8 s over 8 lanes take 50 s — outlived its 30 s lease, another
    worker claimed the deliveries and sent them again, the first one's outcomes were dropped
    as lost, and so on without end. A worker that dies stops renewing: its leases expire as
    before."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._round: Sequence[Job] = ()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, jobs: Sequence[Job]) -> None:
        """The round now being sent (``()``: none)."""
        with self._lock:
            self._round = jobs
            if jobs and self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"renkei-lease-{self._worker.worker_id}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        interval = self._worker.lease.total_seconds() / 3
        while not self._closed.wait(interval):
            with self._lock:
                jobs = [*self._round, *self._worker.carried_jobs()]
            if not jobs:
                continue
            try:
                self._worker.renew(jobs)
                self._worker.beat()  # a slow round is still work under way
            except Exception:
                log.warning("worker.lease_renewal_failed", worker=self._worker.worker_id)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


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
        self.heartbeat = heartbeats.Heartbeat(sessions, size)
        for worker in self.workers:
            worker.heartbeat = self.heartbeat

    def start(self) -> None:
        heartbeats.register(self.heartbeat)
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
        """Stop after the current sends, waiting ``timeout`` seconds in all for them; the
        sends still under way then are ended and their deliveries released
        (:meth:`Worker.abandon`): a system answering after minutes held the process that
        long, and the outcomes it then gave were lost (its store closed meanwhile)."""
        self._stop.set()
        heartbeats.unregister(self.heartbeat)  # /readyz: no longer dispatching
        if self.wakeups is not None:
            self.wakeups.interrupt()
        deadline = monotonic() + timeout  # for all of them, not each in turn
        for thread in self._threads:
            thread.join(max(deadline - monotonic(), 0.0))
        late = [w for w, t in zip(self.workers, self._threads, strict=True) if t.is_alive()]
        for worker in late:
            log.warning("worker.sends_abandoned", worker=worker.worker_id, seconds=timeout)
            worker.abandon()
        for thread in self._threads:
            thread.join(ABANDON_SECONDS)
        self._threads.clear()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
