"""POSTs a platform message to a system's endpoint URL.

The messageId travels outside the payload (``Renkei-Message-Id``) so receivers can deduplicate
(Idempotent Receiver). Status mapping: 2xx delivered (the body is an inquiry's reply); 408 and
429 retry, honouring ``Retry-After``; any other 4xx is permanent (the receiver refuses this
message, retrying cannot help); 5xx, timeouts and connection errors retry. Errors carry the
status and reason only: a response body may hold personal data and is never recorded. A body
longer than ``wire.MAX_BODY`` is not read: a 2xx so answered is delivered without a reply.

Requests go over keep-alive HTTP/1.1 connections kept per sending thread
(:mod:`.exchange`, which also sends a request once more when a kept-alive connection turns
out dead); an ``httpx.Client`` passed in explicitly is used instead (custom TLS, proxies,
mocks).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from adapters.http_out.connections import ThreadConnections
from adapters.http_out.exchange import exchange
from adapters.http_out.wire import MAX_BODY
from adapters.outbound_headers import renkei_headers
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult

CONTENT_TYPE = "application/xml; charset=utf-8"
USER_AGENT = "renkei"
# The reason phrase is the one text of an error a receiving system chooses: kept to what a
# status line should hold, so a system echoing a resident's name never puts it into the
# hub's logs or the Message Store's attempts (docs/data-protection.md).
_REASON_CAP = 40
_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x7e]")
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


def classify_status(
    status: int, reason: str, retry_after: str | None, content: bytes
) -> SendResult:
    """The outcome of an HTTP answer (status line, ``Retry-After``, body)."""
    if 200 <= status < 300:
        return SendResult(Outcome.DELIVERED, reply=content or None)
    reason = _NOT_PLAIN_ASCII.sub("?", reason[:_REASON_CAP])
    error = f"HTTP {status} {reason}".strip()
    if status in RETRYABLE_4XX or status >= 500:
        return SendResult(
            Outcome.RETRY, error=error, retry_after_seconds=retry_after_seconds(retry_after)
        )
    if 400 <= status < 500:
        return SendResult(Outcome.PERMANENT, error=error)
    return SendResult(Outcome.PERMANENT, error=f"unexpected {error}")  # 1xx/3xx not followed


def classify(response: httpx.Response) -> SendResult:
    return classify_status(
        response.status_code,
        response.reason_phrase,
        response.headers.get("Retry-After"),
        response.content,
    )


def _headers(message: OutboundMessage, length: int) -> dict[str, str]:
    return {
        "Content-Type": CONTENT_TYPE,
        "Content-Length": str(length),
        "User-Agent": USER_AGENT,
        **renkei_headers(message),
    }


class HttpTransport:
    """Thread-safe; the timeout is the endpoint's ``timeout_seconds`` (connect, and each
    send or receive, as with httpx)."""

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
        result = classify_status(
            answer.status, answer.reason, answer.headers.get("retry-after"), answer.body
        )
        if answer.oversized and result.outcome is Outcome.DELIVERED:
            # accepted, but an inquiry's reply this long is not read (the Reply stage says so)
            return SendResult(Outcome.DELIVERED, error=OVERSIZED)
        return result

    @staticmethod
    def _send_httpx(
        client: httpx.Client, message: OutboundMessage, endpoint: Endpoint
    ) -> SendResult:
        assert endpoint.url is not None
        headers = _headers(message, len(message.body))
        del headers["Content-Length"]
        try:
            response = client.post(
                endpoint.url,
                content=message.body,
                headers=headers,
                timeout=httpx.Timeout(endpoint.timeout_seconds),
            )
        except httpx.TimeoutException as error:
            return SendResult(Outcome.RETRY, error=f"timeout: {type(error).__name__}")
        except httpx.TransportError as error:
            return SendResult(Outcome.RETRY, error=f"connection: {type(error).__name__}")
        return classify(response)

    def close(self) -> None:
        self._connections.close()
        if self._client is not None:
            self._client.close()
