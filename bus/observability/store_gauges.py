"""Gauges read from the Message Store at scrape time: the queue as it is, whichever process
changed it.

One grouped query over the pending and dead deliveries (the claim index leads with
``state``, so delivered history is not read) and one over the paused or held destinations. A
series is absent when its count is zero. When the store does not answer, these gauges are left out
of the scrape (which still answers with the counters and the readiness checks) rather than
failing it: the monitoring system then tells a database outage from a dead hub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bus.store.audit import utc
from bus.store.clock import database_now
from bus.store.models import Delivery, DeliveryState, DestinationState

_BACKLOG = (
    select(
        Delivery.destination,
        Delivery.tenant,
        Delivery.state,
        func.count(),
        func.min(Delivery.created_at),
    )
    .where(Delivery.state.in_([DeliveryState.PENDING.value, DeliveryState.DEAD.value]))
    .group_by(Delivery.destination, Delivery.tenant, Delivery.state)
)
_STOPPED = select(
    DestinationState.system, DestinationState.paused, DestinationState.held_until
).where(or_(DestinationState.paused, DestinationState.held_until.is_not(None)))


class StoreCollector:
    """A prometheus-client collector over the store's sessions."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config_version: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._config_version = config_version

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "renkei_queue_depth",
            "Deliveries waiting to be sent (pending, including retries), per destination.",
            labels=["destination", "tenant"],
        )
        oldest = GaugeMetricFamily(
            "renkei_queue_oldest_seconds",
            "Age of the oldest pending delivery, per destination.",
            labels=["destination", "tenant"],
        )
        dead = GaugeMetricFamily(
            "renkei_dead_letters",
            "Deliveries in the Dead Letter Channel (renkei dlq list), per destination.",
            labels=["destination", "tenant"],
        )
        paused = GaugeMetricFamily(
            "renkei_destination_paused",
            "1 for a destination paused for planned downtime (renkei destinations pause).",
            labels=["destination"],
        )
        held = GaugeMetricFamily(
            "renkei_destination_held",
            "1 while dispatch sends a destination nothing: it could not be reached (circuit"
            " breaker) or asked to wait (Retry-After).",
            labels=["destination"],
        )
        try:
            self._read(depth, oldest, dead, paused, held)
        except SQLAlchemyError:
            pass  # the store does not answer: renkei_readiness_check{check="database"} says so
        else:
            yield from (depth, oldest, dead, paused, held)
        version = self._config_version()
        if version is not None:
            config = GaugeMetricFamily(
                "renkei_config_version", "The configuration version in force in this process."
            )
            config.add_metric([], version)
            yield config

    def _read(self, *gauges: GaugeMetricFamily) -> None:
        depth, oldest, dead, paused, held = gauges
        with self._sessions() as session:
            now = database_now(session.connection())  # deliveries are created on its clock
            for destination, tenant, state, count, first in session.execute(_BACKLOG):
                if state == DeliveryState.DEAD.value:
                    dead.add_metric([destination, tenant], count)
                    continue
                depth.add_metric([destination, tenant], count)
                age = (now - utc(first)).total_seconds() if first is not None else 0.0
                oldest.add_metric([destination, tenant], max(age, 0.0))
            for system, is_paused, held_until in session.execute(_STOPPED):
                if is_paused:
                    paused.add_metric([system], 1)
                if held_until is not None and utc(held_until) > now:
                    held.add_metric([system], 1)
