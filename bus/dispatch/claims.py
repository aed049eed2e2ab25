"""Claiming deliveries (Competing Consumers over the database-as-queue).

A delivery is claimable when it is pending and due, its lease is empty or expired, its
destination is not paused nor held by its ``Retry-After`` (:data:`RETRY_AFTER_HOLD`), and
no delivery with the same (tenant, destination, subject_key) and a lower sequence is pending
or dead. That last rule keeps order per subject across any number of workers (a leased #1 is
still pending, so #2 waits) and also means a batch holds at most one delivery per subject.
Other subjects flow on. A delivery that ``waits_for`` another (a 訂正 keyed on its own new
subject, waiting for its original's delivery: bus/routing.py) is claimable only when that one
is neither pending nor dead either: one primary-key probe, only for rows that carry one.

A claim is two statements in the caller's transaction: an ``UPDATE`` writing the lease on
the first claimable deliveries in due order (``RETURNING`` them), then one ``SELECT`` of
their messages (what sending needs). PostgreSQL: the candidates are picked with
``FOR UPDATE … SKIP LOCKED``, so workers never wait on each other's rows. SQLite: the
engine opens every transaction with ``BEGIN IMMEDIATE`` (one writer at a time), so the
claim happens under the write lock.

A system's ``max_in_flight`` (同時送信数の上限, docs/configuration.md) bounds how many of its
deliveries are leased at once — being sent, carried over, or claimed and about to be sent —
by every worker of every process together. Only when some system has one (``limits``) does
a claim do more: one grouped count of the limited destinations' live leases; the main lease
passes them all by, and each with room gets a lease of its own of at most that room, oldest
due first (the same claimable rule, so a subject's order is kept as ever). On PostgreSQL two
claimers under READ COMMITTED could both see the same room: a claimer leases a limited
destination only under ``pg_try_advisory_xact_lock`` on its name, counting again once it
holds it; one that does not get the lock passes the destination by for this claim (another
claimer is leasing it now), so nobody waits. On SQLite the write lock already makes the
count exact. Without limits nothing of this runs: the claim is the statements above.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Table,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, aliased

from bus.store.audit import utc
from bus.store.models import Delivery, DeliveryState, DestinationState, StoredMessage

BLOCKING_STATES = (DeliveryState.PENDING.value, DeliveryState.DEAD.value)


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
    # when the hub received the message (end-to-end latency); not part of a job's identity
    received_at: datetime | None = field(default=None, compare=False)


#: ``changed_by`` of a ``destination_states`` row that dispatch created to hold a destination
#: (its ``Retry-After``): no operator has paused or resumed it yet.
RETRY_AFTER_HOLD = "dispatch:retry-after"


def held_destinations(now: Any) -> Any:
    """The systems sent nothing at ``now``: paused by an operator, or held until a time
    they asked for (``Retry-After``, ``held_until``)."""
    return select(DestinationState.system).where(
        or_(DestinationState.paused, DestinationState.held_until > now)
    )


def claimable(now: Any, paused: Collection[str] | None = None) -> ColumnElement[bool]:
    """The WHERE clause of a claimable delivery (shared by :func:`claim` and counters).
    ``paused`` names the paused destinations; None reads them from ``destination_states`` in
    the same statement, with the destinations held by their ``Retry-After``."""
    earlier = aliased(Delivery)
    blocked = exists().where(
        and_(
            earlier.tenant == Delivery.tenant,
            earlier.destination == Delivery.destination,
            earlier.subject_key == Delivery.subject_key,
            earlier.sequence < Delivery.sequence,
            earlier.state.in_(BLOCKING_STATES),
        )
    )
    clause = and_(
        Delivery.state == DeliveryState.PENDING.value,
        Delivery.next_attempt_at <= now,
        or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at <= now),
        ~blocked,
        or_(Delivery.waits_for.is_(None), _waited_state().not_in(BLOCKING_STATES)),
    )
    if paused is None:
        held = held_destinations(now)
        return and_(clause, Delivery.destination.not_in(held.scalar_subquery()))
    if paused:
        clause = and_(clause, Delivery.destination.not_in(sorted(paused)))
    return clause


def _waited_state() -> ColumnElement[str]:
    """The state of the delivery a row ``waits_for``, read by primary key: a scalar subquery,
    which PostgreSQL runs per row and only when the row carries one (an ``EXISTS`` inside the
    ``OR`` may be planned as a hashed subplan over every pending row instead). A delivery no
    longer stored (purged once resolved) counts as delivered."""
    waited = aliased(Delivery)
    state = select(waited.state).where(waited.id == Delivery.waits_for).scalar_subquery()
    return func.coalesce(state, DeliveryState.DELIVERED.value)


_DELIVERIES = cast(Table, Delivery.__table__)
_MESSAGES = cast(Table, StoredMessage.__table__)
_NOW = bindparam("now", type_=DateTime(timezone=True))


def _lease_statement(where: ColumnElement[bool], dialect: str, newest: bool = False) -> Any:
    """Lease the first ``:limit`` claimable deliveries, returning what a job needs of them.

    The candidates are picked from ``deliveries`` alone, in due order (``next_attempt_at``,
    the claim index's order, so the scan stops after ``:limit`` rows instead of sorting the
    whole backlog; ``newest``: those claimable of the last ``:limit`` due, the same index
    read backwards), locked with SKIP LOCKED on PostgreSQL; the message columns are read
    afterwards by primary key. On PostgreSQL the picked ids are handed to the update as an
    array (``id = ANY(ARRAY(…))``), so it looks them up by primary key rather than joining
    the subquery against the whole table."""
    if newest:  # a bounded look: the newest due are often later deliveries of subjects whose
        # first waits at the backlog's head, blocked; walking them all is O(backlog) a claim
        newest_due = aliased(Delivery)
        window = (
            select(newest_due.id)
            .where(
                newest_due.state == DeliveryState.PENDING.value, newest_due.next_attempt_at <= _NOW
            )
            .order_by(newest_due.next_attempt_at.desc())
            .limit(bindparam("limit"))
            .subquery("newest_due")
        )
        # the window drives the join (a handful of rows, each looked up by primary key);
        # ``id IN (window)`` let the planners scan the whole claim index and filter instead
        picked = (
            select(Delivery.id)
            .select_from(window.join(Delivery, Delivery.id == window.c.id))
            .where(where)
        )
    else:
        picked = select(Delivery.id).where(where).order_by(Delivery.next_attempt_at)
    picked = picked.limit(bindparam("limit")).with_for_update(skip_locked=True, of=Delivery)
    chosen = (
        _DELIVERIES.c.id == any_(func.array(picked.scalar_subquery()))
        if dialect == "postgresql"
        else _DELIVERIES.c.id.in_(picked.scalar_subquery())
    )
    return (
        update(_DELIVERIES)
        .where(chosen)
        .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("expires"))
        .returning(
            _DELIVERIES.c.id,
            _DELIVERIES.c.message_pk,
            _DELIVERIES.c.tenant,
            _DELIVERIES.c.destination,
        )
    )


_NO_SORT = text("SET LOCAL enable_sort = off")
_LEASE = {  # built once per dialect and order: compiled once
    (dialect, newest): _lease_statement(claimable(_NOW), dialect, newest)
    for dialect in ("postgresql", "sqlite")
    for newest in (False, True)
}
#: Of a claim's ``limit``, the share (1 in FRESH_SHARE) taken newest due first once the oldest
#: due fill the rest: a backlog made due at once (a bulk redelivery, a resume after an outage,
#: a week of one destination's retries) would otherwise fill every batch until it is gone, and
#: every other destination's new messages would wait behind all of it.
FRESH_SHARE = 4
_SELECT_MESSAGES = select(
    _MESSAGES.c.id,
    _MESSAGES.c.message_id,
    _MESSAGES.c.correlation_id,
    _MESSAGES.c.service,
    _MESSAGES.c.body,
    _MESSAGES.c.received_at,
).where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))


def claim_jobs(
    session: Session,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    paused: Collection[str] | None = None,
    exclude: Collection[str] = (),
    limits: Mapping[str, int] | None = None,
) -> list[Job]:
    """Lease up to ``limit`` claimable deliveries to ``worker_id`` in the caller's transaction
    (the lease holds once it commits) and return what sending them needs, by delivery id.
    The lease (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``) takes
    the oldest due first; when they fill all but a :data:`FRESH_SHARE` of ``limit`` (a
    backlog), a second lease takes those of the share's number of newest due that are
    claimable, so fresh messages of other destinations (or subjects) are sent alongside a
    backlog's drain, not after it; what that leaves of ``limit`` goes to the oldest again. A
    subject's order is kept either way (:func:`claimable`). Then the messages' columns.
    ``exclude``: destinations this worker takes no more of now (its sends to them outlive
    their rounds: bus/dispatch/worker.py) — their backlog, first in due order, would
    otherwise fill every batch. ``limits``: destination → its ``max_in_flight``, for the
    systems that have one (see the module's docstring); None or empty costs nothing."""
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        # A queue table's statistics go stale fast (thousands of rows leave 'pending' between
        # two autoanalyze runs); with a low row estimate the planner switches to a bitmap
        # scan of every pending row, an anti-join over all of them and a sort — O(backlog)
        # per claim. Without sorting it keeps the ordered index scan, which stops after
        # ``limit`` claimable rows. For this transaction only.
        connection.execute(_NO_SORT)
    leased: list[Any] = []
    if limits:
        leased, exclude = _lease_limited(
            connection, dialect, worker_id, now, lease, limit, paused, exclude, limits
        )
        limit -= len(leased)
    if limit > 0:
        leased += _lease_batch(connection, dialect, worker_id, now, lease, limit, paused, exclude)
    if not leased:
        return []
    leased.sort()
    messages = {
        pk: (message_id, correlation_id, service, body, utc(received_at))
        for pk, message_id, correlation_id, service, body, received_at in connection.execute(
            _SELECT_MESSAGES, {"ids": sorted({row[1] for row in leased})}
        )
    }
    jobs = []
    for delivery_id, message_pk, tenant, destination in leased:
        message_id, correlation_id, service, body, received_at = messages[message_pk]
        jobs.append(
            Job(
                delivery_id,
                message_id,
                correlation_id,
                service,
                tenant,
                destination,
                body,
                received_at,
            )
        )
    return jobs


def _lease_batch(
    connection: Connection,
    dialect: str,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    paused: Collection[str] | None,
    exclude: Collection[str],
) -> list[Any]:
    """The leased rows of :func:`claim_jobs`' batch: oldest due first, then the fresh share."""
    fresh = limit // FRESH_SHARE
    oldest = limit - fresh
    parameters = {"now": now, "limit": oldest, "owner": worker_id, "expires": now + lease}
    leased = list(connection.execute(_lease(dialect, paused, exclude, False), parameters))
    if fresh and len(leased) == oldest:  # a backlog: keep a share for what came due last
        parameters["limit"] = fresh
        leased += connection.execute(_lease(dialect, paused, exclude, True), parameters)
        if len(leased) < limit:  # none new (or blocked): the backlog fills the batch
            parameters["limit"] = limit - len(leased)
            leased += connection.execute(_lease(dialect, paused, exclude, False), parameters)
    return leased


#: The live leases of each of some destinations (:func:`_lease_limited`): one grouped count.
_IN_FLIGHT = (
    select(_DELIVERIES.c.destination, func.count())
    .where(
        _DELIVERIES.c.state == DeliveryState.PENDING.value,
        _DELIVERIES.c.destination.in_(bindparam("destinations", expanding=True)),
        _DELIVERIES.c.lease_expires_at > _NOW,
    )
    .group_by(_DELIVERIES.c.destination)
)
#: PostgreSQL: the claimer leasing a limited destination now (held until its commit); the
#: key is a 64-bit hash of the destination's name (a collision only makes a claim pass one by).
_TRY_LOCK = select(
    func.pg_try_advisory_xact_lock(
        func.hashtextextended(literal("renkei.max_in_flight:") + bindparam("one_destination"), 0)
    )
)
_ONE_DESTINATION = Delivery.destination == bindparam("one_destination")
_LEASE_ONE = {  # a limited destination's own lease, oldest due first
    dialect: _lease_statement(and_(claimable(_NOW), _ONE_DESTINATION), dialect)
    for dialect in ("postgresql", "sqlite")
}


def _lease_limited(
    connection: Connection,
    dialect: str,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    paused: Collection[str] | None,
    exclude: Collection[str],
    limits: Mapping[str, int],
) -> tuple[list[Any], set[str]]:
    """Lease what the destinations with a ``max_in_flight`` have room for (at most ``limit``
    in all), each by a lease of its own; returns the rows and the destinations the rest of
    the batch must pass by (``exclude`` and every limited one). PostgreSQL: a destination is
    leased only under its advisory lock, its live leases counted again once held."""
    passed = set(exclude)
    limited = sorted(set(limits) - passed - set(paused or ()))  # sorted: one lock order
    passed.update(limits)
    if not limited:
        return [], passed
    counted: dict[str, int] = {
        destination: count
        for destination, count in connection.execute(
            _IN_FLIGHT, {"destinations": limited, "now": now}
        )
    }
    parameters: dict[str, Any] = {"now": now, "owner": worker_id, "expires": now + lease}
    leased: list[Any] = []
    for destination in limited:
        room = min(limits[destination] - counted.get(destination, 0), limit - len(leased))
        if room <= 0:
            continue
        parameters["one_destination"] = destination
        if dialect == "postgresql":
            if not connection.execute(_TRY_LOCK, parameters).scalar():
                continue  # another claimer is leasing it right now: next time
            # counted again under the lock, in a statement of its own (a fresh snapshot under
            # READ COMMITTED: every lease committed by an earlier holder of the lock)
            held = {"destinations": [destination], "now": now}
            recounted = sum(count for _, count in connection.execute(_IN_FLIGHT, held))
            room = min(limits[destination] - recounted, limit - len(leased))
            if room <= 0:
                continue
        parameters["limit"] = room
        statement = (
            _LEASE_ONE[dialect]
            if paused is None
            else _lease_one_naming(dialect, tuple(sorted(paused)))
        )
        leased += connection.execute(statement, parameters)
    return leased, passed


def _lease(
    dialect: str, paused: Collection[str] | None, exclude: Collection[str], newest: bool
) -> Any:
    """The lease statement: the prebuilt one, or one naming paused and excluded systems."""
    if paused is None and not exclude:
        return _LEASE[(dialect, newest)]
    return _lease_naming(dialect, _names(paused), tuple(sorted(exclude)), newest)


def _names(paused: Collection[str] | None) -> tuple[str, ...] | None:
    return None if paused is None else tuple(sorted(paused))


@lru_cache(maxsize=256)
def _lease_naming(
    dialect: str, paused: tuple[str, ...] | None, exclude: tuple[str, ...], newest: bool
) -> Any:
    """A lease statement naming systems, built once per set of names: building one (the
    claimable clause, its aliases) took ~5 ms of CPU, paid by every claim under SQLite's one
    write lock whenever a system is passed by — with any ``max_in_flight`` configured, every
    claim (helper measurement, docs/dispatch.md)."""
    where = claimable(_NOW, paused)
    if exclude:
        where = and_(where, Delivery.destination.not_in(exclude))
    return _lease_statement(where, dialect, newest)


@lru_cache(maxsize=64)
def _lease_one_naming(dialect: str, paused: tuple[str, ...]) -> Any:
    """:data:`_LEASE_ONE` with paused systems named (built once per set, as above)."""
    return _lease_statement(and_(claimable(_NOW, paused), _ONE_DESTINATION), dialect)


def claim(
    session: Session,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    paused: Collection[str] | None = None,
) -> list[Delivery]:
    """:func:`claim_jobs` returning the leased delivery rows (tools and tests)."""
    jobs = claim_jobs(session, worker_id, now, lease, limit, paused)
    return [session.get_one(Delivery, job.delivery_id, populate_existing=True) for job in jobs]


def paused_destinations(session: Session) -> set[str]:
    return set(session.scalars(select(DestinationState.system).where(DestinationState.paused)))
