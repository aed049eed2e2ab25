"""The hub's counters and histograms, every series named ``renkei_…``.

They live in their own registry (no ``process_``/``python_`` series). Several hub processes
(``renkei serve --http-workers N``, ``renkei worker``, ``renkei import``) on one host share
their values through prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``
must be set before this module is imported (``renkei serve`` sets it for N > 1; the folder's
files: :mod:`bus.observability.metrics_dir`). What
describes the *state* of the hub (queue depth, dead letters) is not counted here but read
from the store at scrape time (:mod:`bus.observability.store_gauges`): it is then right
whichever process made the change, and survives restarts.

Label values come only from bounded sets (configured tenants and routed services, or
``unknown``), never from what a sender wrote: a stream of made-up tenant codes must not grow
the series without end.

A count that cannot be written (the shared folder's disk full: ENOSPC from
:class:`bus.observability.metrics_dir.AllocatedMmapedDict`, where prometheus-client alone
ended the process with SIGBUS) is dropped: a hook never fails the message or round it
counts. One ``metrics.not_counted`` warning says so, and ``metrics.counted_again`` when a
count is written again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import ParamSpec

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.registry import Collector

from bus.dispatch.claims import Job
from bus.dispatch.transport import Outcome, SendResult
from bus.observability.logs import get_logger
from bus.observability.metrics_dir import ProcessFilesCollector, install_allocation
from bus.pipeline import Message, Severity

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN = "unknown"

install_allocation()  # before the first value is made: a full disk is then ENOSPC, not SIGBUS
log = get_logger("renkei.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds: from a few ms (a local receiver) to the minutes of a back-off.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

MESSAGES_RECEIVED = Counter(
    "renkei_messages_received",
    "Messages that entered the ingest pipeline (受信).",
    ["adapter", "service", "tenant"],
    registry=REGISTRY,
)
MESSAGES_REJECTED = Counter(
    "renkei_messages_rejected",
    "Messages refused by the pipeline, by the first error code (拒否).",
    ["service", "tenant", "code"],
    registry=REGISTRY,
)
MESSAGES_STORED = Counter(
    "renkei_messages_stored",
    "Messages committed to the Message Store (a resend of the same content is not counted).",
    ["service", "tenant"],
    registry=REGISTRY,
)
MESSAGES_DUPLICATE = Counter(
    "renkei_messages_duplicate",
    "Resends recognised by the Idempotent Receiver (nothing stored again).",
    ["service", "tenant"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "renkei_ingest_duration_seconds",
    "Time the ingest pipeline took for a message, until its acknowledgement.",
    ["adapter"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "renkei_deliveries",
    "Delivery attempts recorded, by outcome: delivered, retry, dead (Dead Letter Channel).",
    ["destination", "tenant", "outcome"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "renkei_delivery_duration_seconds",
    "Time one send to a destination took (translation out and transport).",
    ["destination"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "renkei_end_to_end_seconds",
    "From a message's receipt by the hub to its delivery's commit, per destination.",
    ["service", "destination"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
IMPORT_RECORDS = Counter(
    "renkei_import_records",
    "Batch-import records processed (登記済通知), by result: new, duplicate, error.",
    ["tenant", "result"],
    registry=REGISTRY,
)
IMPORT_BYTES = Counter(
    "renkei_import_bytes_read",
    "Bytes of batch-import files read and committed.",
    ["tenant"],
    registry=REGISTRY,
)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def scrape_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """What a scrape reads: this process's series (or, in multiprocess mode, those of every
    process that wrote to the shared directory) plus ``extra`` collectors."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        registry.register(ProcessFilesCollector(Path(os.environ[MULTIPROC_ENV])))
    else:
        registry.register(REGISTRY)  # a registry is a collector of its metrics
    for collector in extra:
        registry.register(collector)
    return registry


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of :func:`scrape_registry`."""
    return generate_latest(scrape_registry(extra))


def serve_metrics(port: int, host: str, extra: Iterable[Collector] = ()) -> None:
    """Expose ``/metrics`` on its own port (a ``renkei worker`` on a host without the hub)."""
    start_http_server(port, host, registry=scrape_registry(extra))


# --- hooks ------------------------------------------------------------------------------------

P = ParamSpec("P")
_not_counted = {"since": 0}  # counts dropped since the last one written


def _never_fails(hook: Callable[P, None]) -> Callable[P, None]:
    """``hook``, its counts dropped when the shared files cannot take them (disk full)."""

    @functools.wraps(hook)
    def counted(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except OSError as error:
            if not _not_counted["since"]:
                log.warning("metrics.not_counted", error=error.strerror, folder=_folder())
            _not_counted["since"] += 1
            return
        if _not_counted["since"]:
            log.info("metrics.counted_again", dropped=_not_counted["since"])
            _not_counted["since"] = 0

    return counted


def _folder() -> str | None:
    return os.environ.get(MULTIPROC_ENV)


@_never_fails
def observe_ingest(message: Message, tenant: str, service: str, seconds: float) -> None:
    """One message through :meth:`bus.hub.Hub.ingest`; ``tenant``/``service`` are already
    bounded label values."""
    MESSAGES_RECEIVED.labels(message.adapter, service, tenant).inc()
    INGEST_SECONDS.labels(message.adapter).observe(seconds)
    if message.rejected:
        code = next(f.code for f in message.findings if f.severity is Severity.ERROR)
        MESSAGES_REJECTED.labels(service, tenant, code).inc()
    elif message.ack is not None:
        counter = MESSAGES_DUPLICATE if message.ack.duplicate else MESSAGES_STORED
        counter.labels(service, tenant).inc()


@_never_fails
def observe_round(
    done: Sequence[tuple[Job, SendResult]],
    seconds: Mapping[int, float],
    final: Mapping[int, str],
    now: datetime,
) -> None:
    """A dispatch round's outcomes once its transaction committed. ``seconds``: each send's
    duration by delivery id; ``final``: the deliveries the round recorded as ``delivered``
    or ``dead`` (from its audit entries). A failed attempt with neither is a retry; a
    success with neither lost its lease (its result was dropped) and is not counted.
    Hot code: label children are looked up once per destination, counters incremented
    once per label set."""
    counts: dict[tuple[str, str, str], int] = {}
    send_seconds: dict[str, Histogram] = {}
    end_to_end: dict[tuple[str, str], Histogram] = {}
    for job, result in done:
        destination = job.destination
        elapsed = seconds.get(job.delivery_id)
        if elapsed is not None:
            histogram = send_seconds.get(destination)
            if histogram is None:
                histogram = send_seconds[destination] = DELIVERY_SECONDS.labels(destination)
            histogram.observe(elapsed)
        outcome = final.get(job.delivery_id)
        if outcome is None:
            if result.outcome is Outcome.DELIVERED:
                continue
            outcome = "retry"
        key = (destination, job.tenant, outcome)
        counts[key] = counts.get(key, 0) + 1
        if outcome == "delivered" and job.received_at is not None:
            route = (job.service, destination)
            latency = end_to_end.get(route)
            if latency is None:
                latency = end_to_end[route] = END_TO_END_SECONDS.labels(*route)
            latency.observe((now - job.received_at).total_seconds())
    for labels, count in counts.items():
        DELIVERIES.labels(*labels).inc(count)


@_never_fails
def observe_import_chunk(tenant: str, new: int, duplicate: int, errors: int, nbytes: int) -> None:
    """One committed chunk of a batch import (counts of this chunk, not totals)."""
    for result, count in (("new", new), ("duplicate", duplicate), ("error", errors)):
        if count:
            IMPORT_RECORDS.labels(tenant, result).inc(count)
    IMPORT_BYTES.labels(tenant).inc(nbytes)
