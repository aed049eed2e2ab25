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
    #: Whether the message may have reached the destination: False when the transport knows
    #: nothing of it was sent (no connection, TLS handshake refused, broker not there, folder
    #: not writable) — :func:`destination_wide`; None: the transport does not say.
    reached: bool | None = None


#: A ``delivery_attempts.outcome`` (never a transport's): a destination-wide failure, which
#: holds the destination and does not count toward the retry policy's ``max_attempts``.
UNREACHABLE = "unreachable"

#: For a transport that does not set ``SendResult.reached`` (one registered from outside this
#: repository): the errors that mean no connection to the destination could be made.
_NO_CONNECTION = frozenset(
    {
        "connection: ConnectionRefusedError",  # nothing listens (http_out exchange, soap)
        "connection: ConnectError",  # httpx: refused, DNS, no route, TLS handshake
        "connection: NewConnectionError",  # urllib3 (soap_out)
        "connection: NameResolutionError",  # urllib3 2: DNS
        "connection: MaxRetryError",  # urllib3: its connect failed
        "connection: gaierror",  # DNS (socket)
        "connection: herror",
        "connection: SSLCertVerificationError",  # the destination's certificate
        "connection: SSLError",
        "timeout: ConnectTimeout",  # httpx, http_out exchange (phase Connect)
        "timeout: ConnectTimeoutError",  # urllib3
        "connection: OSError",  # no route to host, network unreachable (errno)
        "broker: OperationalError",  # queue_out (kombu): the broker is not there
        "broker: AMQPConnectionError",
        "broker: ConnectionRefusedError",
        "broker: gaierror",
    }
)
#: file_out: the folder cannot be written (a share not mounted, no permission, disk full).
_FOLDER = "folder: "


def destination_wide(result: SendResult) -> bool:
    """Whether a temporary failure is the destination's, not the message's: no connection
    could be made (refused, connect timeout, DNS, no route, its TLS certificate; a file
    destination's folder not writable). These hold the destination (a circuit breaker) and
    do not count toward the message's ``max_attempts``.

    Any answer, and any failure after the request went out, still counts: a read timeout,
    a reset, 500, 502, 504 and 503 may be caused by this message (a body the receiver chokes
    on, one slow to process, an application answering 503 for the one request whose
    dependency is down) — held for them, one poison message would hold its destination, and
    everyone else's deliveries there, until ``max_age``. A destination that says it is down
    for a while answers with ``Retry-After`` (429/503), which holds it already.

    The transport says which it was (``reached``); the error text is read only for one that
    does not (it once was for all, and an exception type missing from the list counted)."""
    if result.outcome is not Outcome.RETRY:
        return False
    if result.reached is not None:
        return not result.reached
    error = result.error or ""
    return error in _NO_CONNECTION or error.startswith(_FOLDER)


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
