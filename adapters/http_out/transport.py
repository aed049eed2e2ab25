"""POSTs a platform message to a system's endpoint URL.

The messageId travels outside the payload (``Renkei-Message-Id``) so receivers can deduplicate
(Idempotent Receiver). Status mapping: 2xx delivered (the body is an inquiry's reply); 408 and
429 retry, honouring ``Retry-After``; any other 4xx is permanent (the receiver refuses this
message, retrying cannot help); 5xx, timeouts and connection errors retry. Errors carry the
status and reason only: a response body may hold personal data and is never recorded.

Requests go over keep-alive connections kept per sending thread (:mod:`.connections`); an
``httpx.Client`` passed in explicitly is used instead (custom TLS, proxies, mocks).
"""

from __future__ import annotations

import http.client
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from adapters.http_out.connections import ThreadConnections, target
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult

CONTENT_TYPE = "application/xml; charset=utf-8"
USER_AGENT = "renkei"
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


def classify_status(
    status: int, reason: str, retry_after: str | None, content: bytes
) -> SendResult:
    """The outcome of an HTTP answer (status line, ``Retry-After``, body)."""
    if 200 <= status < 300:
        return SendResult(Outcome.DELIVERED, reply=content or None)
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
    headers = {
        "Content-Type": CONTENT_TYPE,
        "Content-Length": str(length),
        "User-Agent": USER_AGENT,
        "Renkei-Message-Id": message.message_id,
        "Renkei-Service": message.service,
        "Renkei-Tenant": message.tenant,
    }
    if message.correlation_id:
        headers["Renkei-Correlation-Id"] = message.correlation_id
    return headers


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
        try:
            where = target(endpoint.url)
        except ValueError:
            return SendResult(Outcome.PERMANENT, error="endpoint url is not http(s)")
        headers = _headers(message, len(message.body))
        for _ in range(2):
            connection, reused = self._connections.get(where.origin, endpoint.timeout_seconds)
            try:
                connection.request("POST", where.path, message.body, headers)
            except (BrokenPipeError, ConnectionResetError) as error:
                self._connections.discard(where.origin)
                if reused:
                    continue  # closed by the server while idle: nothing was received, resend
                return SendResult(Outcome.RETRY, error=f"connection: {_name(error)}")
            except TimeoutError as error:
                self._connections.discard(where.origin)
                return SendResult(Outcome.RETRY, error=f"timeout: {_name(error, 'Connect')}")
            except (OSError, http.client.HTTPException) as error:
                self._connections.discard(where.origin)
                return SendResult(Outcome.RETRY, error=f"connection: {_name(error)}")
            return self._answer(connection, where.origin)
        return SendResult(Outcome.RETRY, error="connection: ConnectionResetError")

    def _answer(
        self, connection: http.client.HTTPConnection, origin: tuple[str, str, int]
    ) -> SendResult:
        try:
            response = connection.getresponse()
            content = response.read()
        except TimeoutError as error:
            self._connections.discard(origin)
            return SendResult(Outcome.RETRY, error=f"timeout: {_name(error, 'Read')}")
        except (OSError, http.client.HTTPException) as error:
            self._connections.discard(origin)
            return SendResult(Outcome.RETRY, error=f"connection: {_name(error)}")
        if response.will_close:
            self._connections.discard(origin)
        return classify_status(
            response.status, response.reason, response.getheader("Retry-After"), content
        )

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


def _name(error: BaseException, timeout_phase: str = "") -> str:
    """A short, body-free name for the error (``ConnectTimeout``, ``ConnectionRefusedError``)."""
    if isinstance(error, TimeoutError):
        return f"{timeout_phase}Timeout"
    return type(error).__name__
