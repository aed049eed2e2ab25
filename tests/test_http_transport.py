"""The HTTP outbound transport against real local servers: headers, status mapping,
Retry-After, timeouts and refused connections."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from adapters.http_out import HttpTransport, retry_after_seconds
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, transport_for
from tests.test_dispatch import Receiver, free_port

RECEIVED: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    """``/status/<code>?retry_after=…&delay=…`` answers with that status."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        RECEIVED.append({"headers": dict(self.headers.items()), "body": body, "path": url.path})
        time.sleep(float(query.get("delay", 0)))
        status = int(url.path.rsplit("/", 1)[-1])
        answer = b"<reply/>" if status == 200 else b"personal data never recorded"
        if status == 204:
            answer = b""  # no content, and no Content-Length body either
        # ?reason=…: the status line's reason phrase, as UTF-8 bytes (what a careless system sends)
        reason = query["reason"].encode().decode("latin-1") if "reason" in query else None
        self.send_response(status, reason)
        if "retry_after" in query:
            self.send_header("Retry-After", query["retry_after"])
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client timed out first
            self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def transport() -> Iterator[HttpTransport]:
    http = HttpTransport()
    yield http
    http.close()


MESSAGE = OutboundMessage(
    message_id="de748862-4821-434d-8d7b-7a6494de5047",
    correlation_id="0eb6ab7b-d243-4fa7-8b09-a61ae46daa33",
    service="ResidentChangeNotice",
    tenant="414247",
    destination="zeimu",
    body="<PlatformMessage>住民</PlatformMessage>".encode(),
)


def _send(transport: HttpTransport, url: str, timeout: float = 5.0) -> Any:
    return transport.send(MESSAGE, Endpoint(transport="http", url=url, timeout_seconds=timeout))


def test_registered_under_the_http_entry_point() -> None:
    assert isinstance(transport_for(Endpoint(transport="http", url="http://x")), HttpTransport)


def test_posts_xml_with_the_ids_outside_the_payload(server: str, transport: HttpTransport) -> None:
    RECEIVED.clear()
    result = _send(transport, f"{server}/status/200")
    assert result.outcome is Outcome.DELIVERED and result.reply == b"<reply/>"
    (request,) = RECEIVED
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["content-type"] == "application/xml; charset=utf-8"
    assert headers["renkei-message-id"] == MESSAGE.message_id
    assert headers["renkei-correlation-id"] == MESSAGE.correlation_id
    assert headers["renkei-service"] == "ResidentChangeNotice"
    assert headers["renkei-tenant"] == "414247"
    assert request["body"] == MESSAGE.body


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (400, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (409, Outcome.PERMANENT),
        (422, Outcome.PERMANENT),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
def test_status_mapping(
    server: str, transport: HttpTransport, status: int, outcome: Outcome
) -> None:
    result = _send(transport, f"{server}/status/{status}")
    assert result.outcome is outcome
    if outcome is not Outcome.DELIVERED:
        assert result.error.startswith(f"HTTP {status} ")
        assert "personal" not in result.error  # the response body is never recorded


def test_a_reason_phrase_is_the_standard_one_never_the_systems(
    server: str, transport: HttpTransport
) -> None:
    """The reason phrase is the one part of an answer's head the receiving system chooses:
    one that echoes a resident's name (even romanised) reaches neither the logs nor the
    stored attempts — the error names the status and its standard phrase."""
    echoed = _send(transport, f"{server}/status/400?reason=" + quote("Yamada Taro not found"))
    assert echoed.outcome is Outcome.PERMANENT and echoed.error == "HTTP 400 Bad Request"
    long = _send(transport, f"{server}/status/503?reason=" + "x" * 500)
    assert long.outcome is Outcome.RETRY and long.error == "HTTP 503 Service Unavailable"


def test_retry_after_seconds_and_http_date(server: str, transport: HttpTransport) -> None:
    assert _send(transport, f"{server}/status/429?retry_after=120").retry_after_seconds == 120
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    from_date = _send(transport, f"{server}/status/503?retry_after={when}").retry_after_seconds
    assert from_date is not None and 85 <= from_date <= 90
    assert _send(transport, f"{server}/status/500").retry_after_seconds is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None


def test_timeout_is_a_retry(server: str, transport: HttpTransport) -> None:
    start = time.monotonic()
    result = _send(transport, f"{server}/status/200?delay=2", timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert result.outcome is Outcome.RETRY and result.error.startswith("timeout")


def test_refused_connection_is_a_retry(transport: HttpTransport) -> None:
    result = _send(transport, f"http://127.0.0.1:{free_port()}/juki")
    assert result.outcome is Outcome.RETRY and result.error.startswith("connection")


def test_recording_receiver_sees_the_headers(tmp_path: Any, transport: HttpTransport) -> None:
    from tests.test_dispatch import body

    receiver = Receiver(tmp_path, "zeimu").start()
    try:
        message = OutboundMessage(
            MESSAGE.message_id,
            None,
            "ResidentChangeNotice",
            "414247",
            "zeimu",
            body(MESSAGE.message_id, "8842282030", 0),
        )
        endpoint = Endpoint(transport="http", url=receiver.url)
        assert transport.send(message, endpoint).outcome is Outcome.DELIVERED
        assert transport.send(message, endpoint).outcome is Outcome.DELIVERED  # a resend
    finally:
        receiver.stop()
    first, second = receiver.records()
    assert first["applied"] and not first["duplicate"]
    assert second["duplicate"] and not second["applied"]  # Idempotent Receiver
    assert (first["headerService"], first["headerTenant"], first["subject"]) == (
        "ResidentChangeNotice",
        "414247",
        "8842282030",
    )
