"""POSTs a platform message to a system's endpoint URL.

The messageId travels outside the payload (``Renkei-Message-Id``) so receivers can deduplicate
(Idempotent Receiver). Status mapping: 2xx delivered (the body is an inquiry's reply); 408 and
429 retry, honouring ``Retry-After``; any other 4xx is permanent (the receiver refuses this
message, retrying cannot help); 5xx, timeouts and connection errors retry. Errors carry the
status and reason only: a response body may hold personal data and is never recorded.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult

CONTENT_TYPE = "application/xml; charset=utf-8"
RETRYABLE_4XX = frozenset({408, 429})


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def classify(response: httpx.Response) -> SendResult:
    status = response.status_code
    if 200 <= status < 300:
        return SendResult(Outcome.DELIVERED, reply=response.content or None)
    error = f"HTTP {status} {response.reason_phrase}".strip()
    if status in RETRYABLE_4XX or status >= 500:
        return SendResult(
            Outcome.RETRY,
            error=error,
            retry_after_seconds=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if 400 <= status < 500:
        return SendResult(Outcome.PERMANENT, error=error)
    return SendResult(Outcome.PERMANENT, error=f"unexpected {error}")  # 1xx/3xx not followed


class HttpTransport:
    """One shared ``httpx.Client`` (connection pooling, thread-safe) for all endpoints; the
    timeout is the endpoint's ``timeout_seconds``."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        follow_redirects=False,
                        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                    )
        return self._client

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        if not endpoint.url:
            return SendResult(Outcome.PERMANENT, error="endpoint has no url")
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Renkei-Message-Id": message.message_id,
            "Renkei-Service": message.service,
            "Renkei-Tenant": message.tenant,
        }
        if message.correlation_id:
            headers["Renkei-Correlation-Id"] = message.correlation_id
        try:
            response = self.client.post(
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
        if self._client is not None:
            self._client.close()
