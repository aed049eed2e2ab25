"""The dashboard's figures, read from the Message Store for the tenants an operator sees:
messages per service and tenant and per hour (last 24 hours), and per destination the queue
depth, dead letters and failed attempts."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from bus.store.clock import database_now
from bus.store.models import Delivery, DeliveryAttempt, DeliveryState, StoredMessage
from bus.wareki import JST

HOURS = 24
BAR_HEIGHT = 80  # px of the tallest bar in the hourly chart


@dataclass(frozen=True, slots=True)
class HourBar:
    label: str  # JST hour, "14時"
    count: int
    height: int


@dataclass(frozen=True, slots=True)
class DestinationFigures:
    destination: str
    tenant: str
    pending: int
    dead: int
    delivered: int
    failed_attempts: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    per_service: list[tuple[str, str, int]]  # service, tenant, messages
    per_hour: list[HourBar]
    per_destination: list[DestinationFigures]
    totals: dict[str, int]


def _in_tenants(
    column: InstrumentedAttribute[str], tenants: Collection[str] | None
) -> list[ColumnElement[bool]]:
    return [] if tenants is None else [column.in_(sorted(tenants))]


def _per_hour(session: Session, tenants: Collection[str] | None, now: datetime) -> list[HourBar]:
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    starts = [top - timedelta(hours=HOURS - i) for i in range(HOURS)]
    counts = []
    for start in starts:  # one indexed count per hour: portable across SQLite and PostgreSQL
        query = select(func.count()).where(
            StoredMessage.received_at >= start,
            StoredMessage.received_at < start + timedelta(hours=1),
            *_in_tenants(StoredMessage.tenant, tenants),
        )
        counts.append(int(session.scalar(query) or 0))
    peak = max(counts) or 1
    return [
        HourBar(f"{start.astimezone(JST):%H}", count, round(BAR_HEIGHT * count / peak))
        for start, count in zip(starts, counts, strict=True)
    ]


def dashboard(
    session: Session, tenants: Collection[str] | None, now: datetime | None = None
) -> Dashboard:
    """``tenants``: the tenants to count (None: every tenant)."""
    now = now or database_now(session.connection())  # messages are received on its clock
    since = now - timedelta(hours=HOURS)
    per_service = [
        (service, tenant, int(count))
        for service, tenant, count in session.execute(
            select(StoredMessage.service, StoredMessage.tenant, func.count())
            .where(StoredMessage.received_at >= since, *_in_tenants(StoredMessage.tenant, tenants))
            .group_by(StoredMessage.service, StoredMessage.tenant)
            .order_by(StoredMessage.service, StoredMessage.tenant)
        )
    ]
    states: dict[tuple[str, str], dict[str, int]] = {}
    for destination, tenant, state, count in session.execute(
        select(Delivery.destination, Delivery.tenant, Delivery.state, func.count())
        .where(*_in_tenants(Delivery.tenant, tenants))
        .group_by(Delivery.destination, Delivery.tenant, Delivery.state)
    ):
        states.setdefault((destination, tenant), {})[state] = int(count)
    failed: dict[tuple[str, str], int] = {}
    for destination, tenant, count in session.execute(
        select(Delivery.destination, Delivery.tenant, func.count())
        .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
        .where(
            DeliveryAttempt.outcome != "delivered",
            DeliveryAttempt.at >= since,
            *_in_tenants(Delivery.tenant, tenants),
        )
        .group_by(Delivery.destination, Delivery.tenant)
    ):
        failed[(destination, tenant)] = int(count)
    per_destination = [
        DestinationFigures(
            destination,
            tenant,
            states.get((destination, tenant), {}).get(DeliveryState.PENDING.value, 0),
            states.get((destination, tenant), {}).get(DeliveryState.DEAD.value, 0),
            states.get((destination, tenant), {}).get(DeliveryState.DELIVERED.value, 0),
            failed.get((destination, tenant), 0),
        )
        for destination, tenant in sorted(states.keys() | failed.keys())
    ]
    totals = {
        "messages": sum(count for _, _, count in per_service),
        "pending": sum(f.pending for f in per_destination),
        "dead": sum(f.dead for f in per_destination),
        "failed_attempts": sum(f.failed_attempts for f in per_destination),
    }
    return Dashboard(per_service, _per_hour(session, tenants, now), per_destination, totals)
