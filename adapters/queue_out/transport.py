"""Publishes platform messages to a message broker with kombu (Message Channel).

The endpoint URL is the kombu broker URL, with the destination as query parameters that are
taken off before kombu sees it: ``amqp://guest:guest@127.0.0.1:5672//?exchange=renkei.out
&queue=zeimu&routing_key=zeimu`` (``memory://?queue=zeimu`` embedded). Defaults: a durable
direct exchange ``renkei.outbound`` and a durable queue named after the destination system,
bound with that routing key, declared on publish so nothing is lost before a consumer exists.

The messageId travels outside the payload, as the AMQP ``message_id`` property and the
``Renkei-Message-Id`` header. Messages are persistent; on AMQP, publisher confirms make a
publish count as delivered only once the broker has taken it. A broker that cannot be reached
or refuses the publish in time is a temporary failure (retry). A queue cannot answer an
inquiry: the Reply stage then reports no reply.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import kombu

from adapters.outbound_headers import renkei_headers
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult

# kombu's API is untyped: use it through an explicitly dynamic handle.
_kombu: Any = kombu
DEFAULT_EXCHANGE = "renkei.outbound"
CONTENT_TYPE = "application/xml"
_OWN_PARAMETERS = frozenset({"exchange", "queue", "routing_key"})
_BROKER_ERROR: Any = __import__("kombu.exceptions", fromlist=["OperationalError"]).OperationalError
_CONNECTION_ERRORS = (_BROKER_ERROR, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class QueueTarget:
    broker_url: str
    exchange: str
    queue: str
    routing_key: str

    @classmethod
    def parse(cls, url: str, destination: str) -> QueueTarget:
        base, _, query_text = url.partition("?")  # not urlunsplit: it turns memory:// into memory:
        query = parse_qsl(query_text, keep_blank_values=True)
        own = {k: v for k, v in query if k in _OWN_PARAMETERS}
        rest = urlencode([(k, v) for k, v in query if k not in _OWN_PARAMETERS])
        queue = own.get("queue") or destination
        return cls(
            broker_url=f"{base}?{rest}" if rest else base,
            exchange=own.get("exchange") or DEFAULT_EXCHANGE,
            queue=queue,
            routing_key=own.get("routing_key") or queue,
        )


class QueueTransport:
    """One broker connection per (sending thread, broker URL): kombu connections and
    channels are not shared between threads."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _connection(self, broker_url: str, timeout: float) -> Any:
        connections: dict[str, Any] = self._local.__dict__.setdefault("connections", {})
        connection = connections.get(broker_url)
        if connection is None:
            options = {} if broker_url.startswith("memory") else {"confirm_publish": True}
            connection = _kombu.Connection(
                broker_url, connect_timeout=timeout, transport_options=options
            )
            connections[broker_url] = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        if not endpoint.url:
            return SendResult(Outcome.PERMANENT, error="endpoint has no url")
        target = QueueTarget.parse(endpoint.url, message.destination)
        exchange = _kombu.Exchange(target.exchange, type="direct", durable=True)
        queue = _kombu.Queue(
            target.queue, exchange=exchange, routing_key=target.routing_key, durable=True
        )
        connection = self._connection(target.broker_url, endpoint.timeout_seconds)
        try:  # the broker not there: nothing was sent
            connection.ensure_connection(max_retries=1, timeout=endpoint.timeout_seconds)
        except (*connection.recoverable_connection_errors, *_CONNECTION_ERRORS) as error:
            connection.release()
            return SendResult(Outcome.RETRY, error=f"broker: {type(error).__name__}", reached=False)
        try:
            producer = _kombu.Producer(connection.default_channel)
            producer.publish(
                message.body,
                exchange=exchange,
                routing_key=target.routing_key,
                declare=[queue],
                content_type=CONTENT_TYPE,
                content_encoding="binary",
                delivery_mode=2,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                headers=renkei_headers(message),
                timeout=endpoint.timeout_seconds,
                retry=False,
            )
        except (*connection.recoverable_connection_errors, *_CONNECTION_ERRORS) as error:
            connection.release()
            return SendResult(Outcome.RETRY, error=f"broker: {type(error).__name__}", reached=True)
        return SendResult(Outcome.DELIVERED)

    def close(self) -> None:
        with self._lock:
            made, self._all = self._all, []
        for connection in made:
            connection.release()
