"""Destinations that misbehave, against real sockets: a Retry-After too far ahead to
represent, an answer trickled byte by byte (slowloris), an answer too long to hold in
memory, a SOAP call answered 200 by something that is not the SOAP service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from adapters.http_out import HttpTransport, retry_after_seconds
from adapters.http_out.transport import OVERSIZED
from adapters.http_out.wire import MAX_BODY
from adapters.soap_out import SoapTransport
from bus.config.index import ConfigIndex
from bus.config.models import Endpoint, HubConfig, RetryPolicy, Route, System, Tenant
from bus.dispatch.reply import ReplyStage
from bus.dispatch.retry import decide
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from bus.dispatch.worker import Worker
from bus.routing import RouteStage
from bus.store.db import Store
from bus.store.models import Delivery
from tests.support.raw_server import Answer, RawServer
from tests.test_dispatch import add_message, hub_config, states, store  # noqa: F401
from tests.test_request_reply import VALIDATOR, _inquiry
from tests.test_soap_out import Scripted, _notice, samples, scripted  # noqa: F401

MESSAGE = OutboundMessage(
    message_id="de748862-4821-434d-8d7b-7a6494de5047",
    correlation_id=None,
    service="ResidentChangeNotice",
    tenant="414247",
    destination="zeimu",
    body=b"<PlatformMessage/>",
)


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    made = HttpTransport()
    yield made
    made.close()


def _send(transport: HttpTransport, url: str, timeout: float = 5.0) -> SendResult:
    return transport.send(MESSAGE, Endpoint(transport="http", url=url, timeout_seconds=timeout))


# --- Retry-After beyond what a datetime can hold ------------------------------------------


@pytest.mark.parametrize("seconds", [1e12, 1e20, float("inf")])
def test_a_retry_after_beyond_the_age_limit_schedules_the_last_attempt_at_it(
    seconds: float,
) -> None:
    """`Retry-After: 99999999999999999999` raised OverflowError here."""
    policy = RetryPolicy(max_age=timedelta(hours=24))
    first = datetime(2026, 4, 1, tzinfo=UTC)
    now = first + timedelta(hours=1)
    decision = decide(
        policy, attempts=1, first_attempt_at=first, now=now, retry_after_seconds=seconds
    )
    assert not decision.dead and decision.next_attempt_at == first + policy.max_age


def test_retry_after_in_digits_other_than_ascii_is_no_number() -> None:
    """`str.isdigit` holds for "²", which `float` then refused (ValueError in the send)."""
    assert retry_after_seconds("²") is None
    assert retry_after_seconds("٣") is None
    assert retry_after_seconds(" 120 ") == 120.0


def _status(code: int, reason: str, *headers: str) -> Answer:
    def answer(_method: str, _target: str) -> Iterable[bytes]:
        extra = "".join(f"{h}\r\n" for h in headers)
        yield f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: 0\r\n\r\n".encode()

    return answer


def test_a_retry_after_too_far_ahead_neither_fails_the_round_nor_outlives_the_age_limit(
    store: Store,  # noqa: F811
    serve: Callable[[Answer], RawServer],
) -> None:
    """A destination answering 429 with a 20-digit Retry-After made the worker's whole round
    fail: nobody's outcome was recorded — the other destination's deliveries, already
    applied by it, were sent again after the lease — and the round failed again each time."""
    busy = serve(_status(429, "Too Many Requests", "Retry-After: 99999999999999999999"))
    fine = serve(_status(200, "OK"))
    policy = RetryPolicy(max_attempts=50, max_age=timedelta(hours=1))
    config = hub_config({"zeimu": f"{busy.base}/zeimu", "juki": f"{fine.base}/juki"}, policy=policy)
    refused, accepted = add_message(store.sessions, "A", ("zeimu", "juki"))[1]
    worker = Worker(store.sessions, lambda: config, None, "qa:1", send_concurrency=1)
    try:
        assert worker.run_once() == 2
    finally:
        worker.close()
    assert states(store.sessions) == {refused: "pending", accepted: "delivered"}
    with store.sessions() as session:
        row = session.execute(
            select(Delivery.first_attempt_at, Delivery.next_attempt_at, Delivery.last_error).where(
                Delivery.id == refused
            )
        ).one()
    assert row.last_error == "HTTP 429 Too Many Requests"
    assert row.next_attempt_at - row.first_attempt_at == policy.max_age


# --- an answer that never ends ---------------------------------------------------------------


def _trickle(head: bytes, body: bytes, pause: float) -> Answer:
    def answer(_method: str, _target: str) -> Iterable[bytes]:
        for byte in head + body:
            yield bytes([byte])
            time.sleep(pause)

    return answer


@pytest.mark.parametrize("where", ["head", "body"])
def test_an_answer_trickled_byte_by_byte_ends_at_the_endpoint_timeout(
    serve: Callable[[Answer], RawServer], transport: HttpTransport, where: str
) -> None:
    """Each byte came well within the timeout, so the send went on for as long as the system
    liked (here 12 s; a slowloris holds a sending thread, and its round, forever)."""
    body = b"x" * 60
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    if where == "head":
        head, body = head.replace(b"\r\n\r\n", b"\r\n" + b"X-Pad: y\r\n" * 6 + b"\r\n"), body[:0]
        head = head.replace(b"Content-Length: 60", b"Content-Length: 0")
    server = serve(_trickle(head, body, 0.15))
    started = time.monotonic()
    result = _send(transport, f"{server.base}/zeimu", timeout=1.0)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.RETRY and result.error == "timeout: ReadTimeout"
    assert elapsed < 1.8


# --- an answer too long to hold --------------------------------------------------------------


def _flood(status: str, framing: str, total: int) -> Answer:
    block = b"x" * (1024 * 1024)

    def answer(_method: str, _target: str) -> Iterable[bytes]:
        if framing == "length":
            yield f"HTTP/1.1 {status}\r\nContent-Length: {total}\r\n\r\n".encode()
        elif framing == "chunked":
            yield f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        else:
            yield f"HTTP/1.1 {status}\r\nConnection: close\r\n\r\n".encode()
        for _ in range(total // len(block)):
            yield b"100000\r\n" + block + b"\r\n" if framing == "chunked" else block
        if framing == "chunked":
            yield b"0\r\n\r\n"

    return answer


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_accepting_answer_too_long_to_hold_is_delivered_without_reading_it(
    serve: Callable[[Answer], RawServer], transport: HttpTransport, framing: str
) -> None:
    """A 200 with a 48 MiB body was read whole into memory (a 600 MiB one took 1.2 GB of
    RSS), and handed on as an inquiry's reply."""
    server = serve(_flood("200 OK", framing, 48 * 1024 * 1024))
    result = _send(transport, f"{server.base}/zeimu", timeout=10.0)
    assert result.outcome is Outcome.DELIVERED and result.reply is None
    assert result.error == OVERSIZED == "answer body over 16 MiB not read"
    time.sleep(0.2)  # the server notices the closed connection
    assert server.sent < MAX_BODY + 8 * 1024 * 1024  # not drained to the end
    # the connection was dropped, not reused mid-body: the next send is answered properly
    assert _send(transport, f"{serve(_status(200, 'OK')).base}/zeimu").outcome is Outcome.DELIVERED


def test_a_refusing_answer_too_long_to_hold_is_classified_by_its_status(
    serve: Callable[[Answer], RawServer], transport: HttpTransport
) -> None:
    server = serve(_flood("503 Service Unavailable", "length", 32 * 1024 * 1024))
    result = _send(transport, f"{server.base}/zeimu", timeout=10.0)
    assert result.outcome is Outcome.RETRY and result.error == "HTTP 503 Service Unavailable"


def test_an_inquiry_answered_too_long_to_read_is_rpl002_with_the_reason(
    serve: Callable[[Answer], RawServer],
) -> None:
    """The Reply stage said only "empty reply" for a reply it had not read."""
    server = serve(_flood("200 OK", "length", 24 * 1024 * 1024))
    inquiry = _inquiry("AddresseeInquiry")
    tenant = inquiry.envelope.client.tenant  # type: ignore[union-attr]
    config = HubConfig(
        tenants=(Tenant(code=tenant, name="town"),),
        systems=(
            System(
                id="juki",
                name="juki",
                endpoint=Endpoint(transport="http", url=f"{server.base}/zeimu", timeout_seconds=10),
            ),
        ),
        routes=(Route(service="AddresseeInquiry", provider="juki"),),
    )
    index = ConfigIndex(config)
    stage = ReplyStage(lambda service, tenant: index.system("juki"), VALIDATOR.validate)
    answered = stage(RouteStage(index.route, lambda tenant, mid: None)(inquiry))
    [finding] = [f for f in answered.findings if f.code.startswith("RK-RPL")]
    assert finding.code == "RK-RPL002"
    assert answered.reply is None
    assert finding.detail == OVERSIZED


# --- SOAP: a 200 that is not the SOAP service's ----------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize(
    ("status", "body", "outcome", "error"),
    [
        (
            200,
            "<!DOCTYPE html><html><body>ログイン</body></html>".encode(),
            Outcome.RETRY,
            "HTTP 200 answer is not a SOAP envelope",
        ),
        (200, b"<html><body>maintenance</body></html>", Outcome.RETRY, None),
        (202, b"OK", Outcome.RETRY, None),
        (200, b"", Outcome.DELIVERED, None),  # a one-way operation's empty answer
        (200, b"\r\n", Outcome.DELIVERED, None),
    ],
)
def test_a_soap_call_answered_2xx_by_something_else_is_not_delivered(
    scripted: tuple[Scripted, str],  # noqa: F811
    status: int,
    body: bytes,
    outcome: Outcome,
    error: str | None,
) -> None:
    """A proxy's login page or a maintenance page served with 200 counted as delivered: the
    message was lost without a trace."""
    script, url = scripted
    script.answer, script.delay = (status, body, {"Content-Type": "text/html"}), 0.0
    soap = SoapTransport()
    try:
        result = soap.send(_notice(), Endpoint(transport="soap", url=url, timeout_seconds=5))
    finally:
        soap.close()
    assert result.outcome is outcome, result.error
    if error is not None:
        assert result.error == error


@pytest.mark.interop
def test_a_soap_answer_too_long_to_read_is_a_retry(
    scripted: tuple[Scripted, str],  # noqa: F811
) -> None:
    """Neither a Fault nor a reply can be told from an answer that is not read."""
    script, url = scripted
    script.answer, script.delay = (200, b" " * (MAX_BODY + 1), {}), 0.0
    soap = SoapTransport()
    try:
        result = soap.send(_notice(), Endpoint(transport="soap", url=url, timeout_seconds=5))
    finally:
        soap.close()
    assert result.outcome is Outcome.RETRY
    assert result.error == "HTTP 200 answer body over 16 MiB not read"
