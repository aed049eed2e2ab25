"""What the hub reports of each message and delivery: its metrics and its one log line.

:meth:`bus.hub.Hub.ingest` calls :func:`ingest_observed` after the pipeline; a dispatch
worker calls :func:`round_committed` once a round's outcomes are committed and
:func:`delivery_context` around each send (so a transport library's own log lines carry the
message's ids).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from bus.config.index import ConfigIndex
from bus.dispatch.claims import Job
from bus.dispatch.transport import Outcome, SendResult
from bus.observability.logs import context_of, get_logger
from bus.observability.metrics import UNKNOWN, observe_ingest, observe_round
from bus.pipeline import Message, Severity
from bus.store.audit import AuditEntry

EVENTS_LOGGER = "renkei.events"
log = get_logger(EVENTS_LOGGER)
_stdlib = logging.getLogger(EVENTS_LOGGER)


def _labels(message: Message, index: ConfigIndex) -> tuple[str, str]:
    """(tenant, service) label values from the configuration's bounded sets."""
    envelope = message.envelope
    tenant = envelope.client.tenant if envelope is not None else None
    service = message.service or (envelope.service if envelope is not None else None)
    known_tenant = tenant if tenant is not None and index.tenant(tenant) is not None else None
    known_service = (
        service
        if service is not None and index.route(service, known_tenant or "*") is not None
        else None
    )
    return known_tenant or UNKNOWN, known_service or UNKNOWN


def message_context(message: Message) -> Mapping[str, str | None]:
    envelope = message.envelope
    if envelope is None:
        return context_of(message_id=None)
    return context_of(
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        service=message.service or envelope.service,
        tenant=envelope.client.tenant,
        system=envelope.client.system,
    )


def ingest_observed(message: Message, index: ConfigIndex, seconds: float) -> None:
    """Count the message and write its one line (INFO): stored, duplicate or rejected (with
    the error codes, never the values). A refusal is the hub doing its job, not a fault."""
    tenant, service = _labels(message, index)
    observe_ingest(message, tenant, service, seconds)
    fields = {**message_context(message), "adapter": message.adapter, "ms": round(seconds * 1e3, 2)}
    if message.rejected:
        codes = sorted({f.code for f in message.findings if f.severity is Severity.ERROR})
        log.info("message.rejected", codes=codes, **fields)
    elif message.ack is not None:
        event = "message.duplicate" if message.ack.duplicate else "message.stored"
        log.info(event, destinations=list(message.ack.destinations), **fields)


def delivery_context(job: Job) -> Mapping[str, str | None]:
    return context_of(
        message_id=job.message_id,
        correlation_id=job.correlation_id,
        service=job.service,
        tenant=job.tenant,
        system=job.destination,
    )


def round_committed(
    done: Sequence[tuple[Job, SendResult]],
    seconds: Mapping[int, float],
    audits: Sequence[AuditEntry],
    now: datetime,
) -> None:
    """Count a committed round; a line per dead letter (WARNING), per retry (INFO) and per
    delivery (DEBUG: a busy hub delivers thousands a second)."""
    entries = {(entry.detail or {}).get("delivery"): entry for entry in audits}
    observe_round(done, seconds, {i: e.event for i, e in entries.items() if i is not None}, now)
    every = _stdlib.isEnabledFor(logging.DEBUG)
    for job, result in done:
        if result.outcome is Outcome.DELIVERED and not every:
            continue  # the common case: nothing to write
        entry = entries.get(job.delivery_id)
        context = {**delivery_context(job), "delivery": job.delivery_id}
        if entry is None and result.error is not None:
            log.info("delivery.retry", error=result.error, **context)
        elif entry is not None and entry.event == "dead":
            reason = (entry.detail or {}).get("reason")
            log.warning("delivery.dead", error=result.error, reason=reason, **context)
        elif entry is not None:
            log.debug("delivery.delivered", **context)
