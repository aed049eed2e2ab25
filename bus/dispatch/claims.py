"""Claiming deliveries (Competing Consumers over the database-as-queue).

A delivery is claimable when it is pending and due, its lease is empty or expired, its
destination is not paused, and no delivery with the same (tenant, destination, subject_key)
and a lower sequence is pending or dead. That last rule keeps order per subject across any
number of workers (a leased #1 is still pending, so #2 waits) and also means a batch holds at
most one delivery per subject. Other subjects flow on.

PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` so workers never wait on each other's rows.
SQLite: the engine opens every transaction with ``BEGIN IMMEDIATE`` (one writer at a time), so
the select and the lease update happen under the write lock.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from bus.store.models import Delivery, DeliveryState, DestinationState

BLOCKING_STATES = (DeliveryState.PENDING.value, DeliveryState.DEAD.value)


def claimable(now: datetime, paused: Collection[str]) -> ColumnElement[bool]:
    """The WHERE clause of a claimable delivery (shared by :func:`claim` and counters)."""
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
    )
    if paused:
        clause = and_(clause, Delivery.destination.not_in(sorted(paused)))
    return clause


def claim(
    session: Session,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    paused: Collection[str],
) -> list[Delivery]:
    """Lease up to ``limit`` claimable deliveries to ``worker_id`` (in the caller's
    transaction; the lease holds once it commits)."""
    statement = (
        select(Delivery)
        .where(claimable(now, paused))
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    )
    rows = list(session.scalars(statement))
    if rows:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([row.id for row in rows]))
            .values(lease_owner=worker_id, lease_expires_at=now + lease),
            execution_options={"synchronize_session": False},
        )
        for row in rows:
            row.lease_owner, row.lease_expires_at = worker_id, now + lease
    return rows


def paused_destinations(session: Session) -> set[str]:
    return set(session.scalars(select(DestinationState.system).where(DestinationState.paused)))
