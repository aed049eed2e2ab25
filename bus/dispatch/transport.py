"""The outbound side's contract: a Transport sends one message to one endpoint.

Transports are adapters (``adapters/…``) registered under the ``renkei.transports`` entry-point
group by the name a system's ``endpoint.transport`` uses, so the core never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
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


class UnknownTransport(LookupError):
    """No adapter is registered under the transport name a system's endpoint uses."""


@cache
def transports() -> dict[str, Transport]:
    found: dict[str, Transport] = {}
    for entry in entry_points(group=TRANSPORT_GROUP):
        factory = entry.load()
        found[entry.name] = factory()
    return found


def transport_for(endpoint: Endpoint) -> Transport:
    try:
        return transports()[endpoint.transport]
    except KeyError:
        raise UnknownTransport(endpoint.transport) from None
