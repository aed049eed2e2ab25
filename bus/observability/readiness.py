"""Readiness (``/readyz``): may a load balancer send this process traffic?

Ready when the database answers (RK-OPS013 when another process holds the SQLite store's
lock, else RK-OPS001; after a write failed because the store is full, it must be written again:
RK-OPS007, bus/store/write_health.py), the broker that carries wake-ups accepts a connection
(``memory://`` is in-process and always ready), a configuration is loaded and — where this hub
runs dispatch workers (in process, or serve's dispatch processes) — at least one of them beat
recently (bus/dispatch/heartbeat.py): a hub that accepts but cannot deliver is not ready. Where
the workers run elsewhere (``renkei worker``), there is no dispatch check. Each failed check is
a coded finding (RK-OPS…) with the reason; a check never waits longer than ``timeout`` seconds,
so a probe does not hang on a dead peer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kombu
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text

from bus.dispatch import heartbeat
from bus.errors import make_finding
from bus.hub import Hub
from bus.pipeline import Finding
from bus.store.db import unreachable_finding
from bus.store.write_health import write_health

_kombu: Any = kombu  # untyped library


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    finding: Finding | None  # None: passed

    @property
    def ok(self) -> bool:
        return self.finding is None

    def as_dict(self) -> dict[str, Any]:
        if self.finding is None:
            return {"ok": True}
        return {"ok": False, "finding": self.finding.as_dict()}


def _reason(error: BaseException) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}"[:200]


def check_database(hub: Hub) -> Check:
    try:
        with hub.store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        finding = unreachable_finding(error, _reason(error), path="/readyz/database")
        return Check("database", finding)
    return check_writable(hub)


def check_writable(hub: Hub) -> Check:
    """Not ready while the last write found the store full. A load balancer then sends
    nothing, so the check itself probes with a real write (at most once a second); the first
    write that succeeds, the probe's or a message's, makes it ready again."""
    health = write_health(hub.store.engine)
    if not health.failing or health.probe(hub.store.sessions):
        return Check("database", None)
    reason = health.reason or "storage full"
    return Check("database", make_finding("RK-OPS007", path="/readyz/database", actual=reason))


def check_broker(broker_url: str, timeout: float) -> Check:
    if broker_url.startswith("memory:"):
        return Check("broker", None)
    try:
        with _kombu.Connection(broker_url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as error:
        finding = make_finding("RK-OPS002", path="/readyz/broker", actual=_reason(error))
        return Check("broker", finding)
    return Check("broker", None)


def check_configuration(hub: Hub) -> Check:
    try:
        version = hub.config.current().version
    except Exception as error:
        finding = make_finding("RK-OPS003", path="/readyz/configuration", actual=_reason(error))
        return Check("configuration", finding)
    return Check("configuration", None if version else _no_config())


def _no_config() -> Finding:
    return make_finding("RK-OPS003", path="/readyz/configuration", actual="no version")


def check_dispatch(hub: Hub) -> Check | None:
    """Are this hub's dispatch workers alive? serve's dispatch processes (their beat files)
    when serve runs some, else this process's own workers; None when neither is expected."""
    stale = heartbeat.stale_seconds()
    expected = heartbeat.expected_processes()
    if expected:
        beats = heartbeat.process_ages(heartbeat.beat_dir(hub.settings.data_dir))
        alive = sum(1 for age in beats.values() if age <= stale)
        if alive:
            return Check("dispatch", None)
        reason = f"0 of {expected} dispatch process(es) beat within {stale:g} s"
    elif hub.settings.dispatch_workers > 0:
        ages = heartbeat.running_ages(hub.store.sessions)
        if any(age is not None and age <= stale for age in ages):
            return Check("dispatch", None)
        state = "stale" if ages else "not running"
        reason = f"in-process workers {state} (no beat within {stale:g} s)"
    else:
        return None
    return Check("dispatch", make_finding("RK-OPS004", path="/readyz/dispatch", actual=reason))


def readiness(hub: Hub | None, timeout: float = 2.0) -> list[Check]:
    """Every check, in order; ``hub`` is None while the process is starting (not ready)."""
    if hub is None:
        starting = make_finding("RK-OPS003", path="/readyz", actual="the hub is starting")
        return [Check("hub", starting)]
    checks = [
        check_database(hub),
        check_broker(hub.settings.broker_url, timeout),
        check_configuration(hub),
    ]
    dispatch = check_dispatch(hub)
    return checks if dispatch is None else [*checks, dispatch]


class ReadinessCollector:
    """``renkei_readiness_check{check}``: each check of ``/readyz`` at scrape time, 1 passed
    and 0 failed, so an alert rule can say which part is down (the reason's code is in
    ``/readyz`` and the log)."""

    def __init__(self, hub: Hub | None) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "renkei_readiness_check",
            "The checks of /readyz (database, broker, configuration, dispatch): 1 ok, 0 failed.",
            labels=["check"],
        )
        for check in readiness(self._hub):
            gauge.add_metric([check.name], 1 if check.ok else 0)
        yield gauge
