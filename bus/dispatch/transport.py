"""The outbound side's contract: a Transport sends one message to one endpoint.

Transports are adapters (``adapters/…``) registered under the ``renkei.transports`` entry-point
group by the name a system's ``endpoint.transport`` uses, so the core never imports them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Protocol

from bus.config.models import Endpoint

TRANSPORT_GROUP = "renkei.transports"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # temporary: 5xx, timeout, connection error, 408/429
    PERMANENT = "permanent"  # the receiver refused it (SOAP Client fault, other 4xx)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message on its way to one destination. ``message_id`` travels outside the payload
    (header, HTTP header or file name) so receivers can deduplicate."""

    message_id: str
    correlation_id: str | None
    service: str
    tenant: str
    destination: str
    body: bytes  # the canonical PlatformMessage, translated for the destination if it maps


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    error: str | None = None
    retry_after_seconds: float | None = None
    reply: bytes | None = None  # an inquiry's answer (request-reply)


class Transport(Protocol):
    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult: ...

    def close(self) -> None:
        """Release connections (the registry makes a new transport on next use)."""


class UnknownTransport(LookupError):
    """No adapter is registered under the transport name a system's endpoint uses."""


_registry: dict[str, Transport] | None = None
_registry_lock = threading.Lock()


def transports() -> dict[str, Transport]:
    """The registered transports, made once per process (under a lock: concurrent first sends
    from several workers must not each make, and then drop, their own connection pool)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = {
                entry.name: entry.load()() for entry in entry_points(group=TRANSPORT_GROUP)
            }
        return _registry


def close_transports() -> None:
    """Close every transport made so far (a hub closing), so no connection is left open."""
    global _registry
    with _registry_lock:
        made, _registry = _registry, None
    for transport in (made or {}).values():
        transport.close()


def transport_for(endpoint: Endpoint) -> Transport:
    try:
        return transports()[endpoint.transport]
    except KeyError:
        raise UnknownTransport(endpoint.transport) from None
