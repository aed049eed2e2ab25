"""POSTs a platform message to a system's endpoint URL.

The messageId travels outside the payload (``Renkei-Message-Id``) so receivers can deduplicate
(Idempotent Receiver). Status mapping: 2xx delivered (the body is an inquiry's reply); 408 and
429 retry, honouring ``Retry-After``; any other 4xx is permanent (the receiver refuses this
message, retrying cannot help); 5xx, timeouts and connection errors retry. Errors carry the
status and its standard phrase only: a response body, or a reason phrase the system chose,
may hold personal data and is never recorded. A body longer than ``wire.MAX_BODY`` is not
read: a 2xx so answered is delivered without a reply.

Requests go over keep-alive HTTP/1.1 connections kept per sending thread
(:mod:`.exchange`, which also sends a request once more when a kept-alive connection turns
out dead); an ``httpx.Client`` passed in explicitly is used instead (custom TLS, proxies,
mocks), within the same limits: the timeout for the whole exchange (:mod:`.deadline`) and
``MAX_BODY``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from adapters.http_out.connections import ThreadConnections
from adapters.http_out.deadline import Watchdog, read_capped
from adapters.http_out.exchange import exchange
from adapters.http_out.wire import MAX_BODY
from adapters.outbound_headers import renkei_headers
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult

CONTENT_TYPE = "application/xml; charset=utf-8"
USER_AGENT = "renkei"
RETRYABLE_4XX = frozenset({408, 429})
OVERSIZED = f"answer body over {MAX_BODY // (1024 * 1024)} MiB not read"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²" or "٣": str.isdigit takes those too
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def status_text(status: int) -> str:
    """``HTTP 404 Not Found``: the code and its standard phrase (RFC 9110), never the phrase
    the system sent — it chooses that text, which may name a resident (even romanised, or a
    個人番号's 12 ASCII digits), and it carries nothing an operator needs beyond the code
    (clients are to ignore it, RFC 9112 §4; HTTP/2 has none). docs/dispatch.md."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:  # a code without a registered phrase
        return f"HTTP {status}"


def classify_status(status: int, retry_after: str | None, content: bytes) -> SendResult:
    """The outcome of an HTTP answer (status code, ``Retry-After``, body)."""
    if 200 <= status < 300:
        return SendResult(Outcome.DELIVERED, reply=content or None)
    error = status_text(status)
    if status in RETRYABLE_4XX or status >= 500:
        return SendResult(
            Outcome.RETRY, error=error, retry_after_seconds=retry_after_seconds(retry_after)
        )
    if 400 <= status < 500:
        return SendResult(Outcome.PERMANENT, error=error)
    return SendResult(Outcome.PERMANENT, error=f"unexpected {error}")  # 1xx/3xx not followed


def _headers(message: OutboundMessage, length: int) -> dict[str, str]:
    return {
        "Content-Type": CONTENT_TYPE,
        "Content-Length": str(length),
        "User-Agent": USER_AGENT,
        **renkei_headers(message),
    }


def _classified(status: int, retry_after: str | None, body: bytes | None) -> SendResult:
    """:func:`classify_status` of an answer whose body was not read when None (too long)."""
    result = classify_status(status, retry_after, body or b"")
    if body is None and result.outcome is Outcome.DELIVERED:
        # accepted, but an inquiry's reply this long is not read (the Reply stage says so)
        return SendResult(Outcome.DELIVERED, error=OVERSIZED)
    return result


class HttpTransport:
    """Thread-safe; the timeout is the endpoint's ``timeout_seconds``, for the whole exchange
    (connect, request and every byte of the answer)."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client
        self._connections = ThreadConnections()

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        if not endpoint.url:
            return SendResult(Outcome.PERMANENT, error="endpoint has no url")
        if self._client is not None:
            return self._send_httpx(self._client, message, endpoint)
        headers = _headers(message, len(message.body))
        answer = exchange(
            self._connections, endpoint.url, headers, message.body, endpoint.timeout_seconds
        )
        if isinstance(answer, SendResult):
            return answer
        body = None if answer.oversized else answer.body
        return _classified(answer.status, answer.headers.get("retry-after"), body)

    @staticmethod
    def _send_httpx(
        client: httpx.Client, message: OutboundMessage, endpoint: Endpoint
    ) -> SendResult:
        """The exchange through ``client``, ended at the endpoint's timeout by a
        :class:`Watchdog` on its sockets. ``Connection: close``: every exchange opens its
        own connection, whose socket the watchdog learns from httpx's connect trace."""
        assert endpoint.url is not None
        headers = _headers(message, len(message.body))
        del headers["Content-Length"]
        headers["Connection"] = "close"
        timeout = endpoint.timeout_seconds
        with Watchdog(timeout) as watchdog:

            def trace(event: str, info: dict[str, Any]) -> None:
                if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
                    watchdog.watch(info["return_value"].get_extra_info("socket"))

            try:
                with client.stream(
                    "POST",
                    endpoint.url,
                    content=message.body,
                    headers=headers,
                    timeout=httpx.Timeout(timeout),
                    extensions={"trace": trace},
                ) as response:
                    body = read_capped(response.iter_bytes(), watchdog)
            except httpx.TimeoutException as error:
                return SendResult(
                    Outcome.RETRY,
                    error=f"timeout: {type(error).__name__}",
                    reached=not isinstance(error, httpx.ConnectTimeout),
                )
            except TimeoutError:  # the deadline, seen between two reads of the body
                return SendResult(Outcome.RETRY, error="timeout: ReadTimeout", reached=True)
            except httpx.TransportError as error:
                if watchdog.fired:  # its sockets were shut at the deadline
                    return SendResult(Outcome.RETRY, error="timeout: ReadTimeout", reached=True)
                return SendResult(
                    Outcome.RETRY,
                    error=f"connection: {type(error).__name__}",
                    reached=not isinstance(error, httpx.ConnectError),
                )
        return _classified(response.status_code, response.headers.get("Retry-After"), body)

    def interrupt(self) -> None:
        """End the sends under way (the hub stopping; bus/dispatch/worker.py)."""
        self._connections.interrupt()

    def close(self) -> None:
        self._connections.close()
        if self._client is not None:
            self._client.close()
