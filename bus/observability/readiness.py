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

The broker check is the one that costs: a new broker connection each time. ``/readyz``,
``/metrics`` (``renkei_readiness_check``) and the console all ask it, as often as every load
balancer and Prometheus server likes, from each HTTP process. So its result is kept for
``RENKEI_BROKER_CHECK_SECONDS`` (default 10) per process and broker: at most one connection a
period, whoever asks; callers arriving while a check runs wait for that one (single flight).
A failure is kept as long, so a broker that is down is not hammered either, and it shows within
the period (plus the check's own ``timeout``). One attempt, no retry: a refused connection fails
at once, a silent peer after ``timeout``.
"""

from __future__ import annotations

import os
import threading
import time
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


BROKER_CHECK_ENV = "RENKEI_BROKER_CHECK_SECONDS"
DEFAULT_BROKER_CHECK_SECONDS = 10.0


def broker_check_seconds() -> float:
    """How long a broker check's result is reused (``RENKEI_BROKER_CHECK_SECONDS``; 0: not
    reused, one connection per question; unreadable or negative: the default)."""
    value = os.environ.get(BROKER_CHECK_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_BROKER_CHECK_SECONDS
    except ValueError:
        seconds = DEFAULT_BROKER_CHECK_SECONDS
    return seconds if seconds >= 0 else DEFAULT_BROKER_CHECK_SECONDS


class _BrokerProbe:
    """The last broker check of this process for one broker URL, and the lock that makes
    concurrent callers share one connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result: Check | None = None
        self.at = 0.0  # time.monotonic() when ``result`` was found


_probes: dict[str, _BrokerProbe] = {}
_probes_lock = threading.Lock()


def _probe_for(broker_url: str) -> _BrokerProbe:
    with _probes_lock:
        return _probes.setdefault(broker_url, _BrokerProbe())


def check_broker(broker_url: str, timeout: float, max_age: float | None = None) -> Check:
    """The broker accepts a connection: a result found less than ``max_age`` seconds ago
    (default :func:`broker_check_seconds`) in this process, else a new check."""
    if broker_url.startswith("memory:"):
        return Check("broker", None)
    max_age = broker_check_seconds() if max_age is None else max_age
    probe = _probe_for(broker_url)
    with probe.lock:  # a check in flight: wait for it (bounded by its ``timeout``)
        if probe.result is not None and time.monotonic() - probe.at < max_age:
            return probe.result
        probe.result = _connect(broker_url, timeout)
        probe.at = time.monotonic()
        return probe.result


def _connect(broker_url: str, timeout: float) -> Check:
    try:
        with _kombu.Connection(broker_url, connect_timeout=timeout) as connection:
            # one attempt: kombu sleeps 2 s before a retry, which a probe cannot afford
            connection.ensure_connection(max_retries=0, timeout=timeout)
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
    """``renkei_readiness_check{check}``: each check of ``/readyz`` at scrape time (the
    broker's as reused for ``RENKEI_BROKER_CHECK_SECONDS``), 1 passed and 0 failed, so an
    alert rule can say which part is down (the reason's code is in ``/readyz`` and the log)."""

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
