"""The outbound paths that still had only per-read timeouts and no size limit — an injected
``httpx.Client``, the SOAP transport's urllib3 pool (a proxy the environment names) and the
SOAP transport's WSDL fetch — against real local servers that trickle an answer byte by
byte, send one too long to hold, or redirect elsewhere: each ends at the endpoint's timeout
for the whole exchange, reads no more than ``MAX_BODY`` and follows no redirect."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from adapters.http_out import HttpTransport
from adapters.http_out.transport import OVERSIZED
from adapters.http_out.wire import MAX_BODY
from adapters.soap_out import SoapTransport
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from tests.support.certificates import Authority
from tests.support.raw_server import Answer, RawServer
from tests.test_soap_out import Scripted, _notice, samples, scripted  # noqa: F401
from tests.test_soap_out_pool import PROXY_ENV

TIMEOUT = 1.0
LATE = 1.8  # the timeout, and what a loaded machine may add to it
FLOOD = 48 * 1024 * 1024
BLOCK = b"x" * (1024 * 1024)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def whole(body: bytes, status: str = "200 OK", *headers: str) -> list[bytes]:
    extra = "".join(f"{header}\r\n" for header in headers)
    head = f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return [head.encode() + body]


def trickled(body: bytes, pause: float = 0.15) -> Iterator[bytes]:
    """An answer whose every byte comes well within a per-read timeout: 6 s in all."""
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n".encode()
    for byte in head + b"X-Pad: y\r\n" * 3 + b"\r\n" + body:
        time.sleep(pause)
        yield bytes([byte])


def flooded(status: str = "200 OK") -> Iterator[bytes]:
    yield f"HTTP/1.1 {status}\r\nContent-Length: {FLOOD}\r\nConnection: close\r\n\r\n".encode()
    for _ in range(FLOOD // len(BLOCK)):
        yield BLOCK


def _timed(send: Callable[[], SendResult]) -> tuple[SendResult, float]:
    started = time.monotonic()
    result = send()
    return result, time.monotonic() - started


# --- an injected httpx.Client ----------------------------------------------------------------

MESSAGE = OutboundMessage(
    message_id="5b0f8f3e-6a43-4c1b-9a39-0f1c7c3f2d10",
    correlation_id=None,
    service="ResidentChangeNotice",
    tenant="414247",
    destination="zeimu",
    body=b"<PlatformMessage/>",
)


def _through_httpx(url: str) -> SendResult:
    transport = HttpTransport(client=httpx.Client())
    try:
        return transport.send(MESSAGE, Endpoint(transport="http", url=url, timeout_seconds=TIMEOUT))
    finally:
        transport.close()


@pytest.mark.parametrize("where", ["head", "body"])
def test_an_injected_httpx_client_ends_a_trickled_answer_at_the_timeout(
    serve: Callable[[Answer], RawServer], where: str
) -> None:
    """httpx's timeout is per read: an answer trickled at a byte per 0.15 s held the send
    for all of its 6 s (as long as the system liked)."""
    body = b"<ok/>" * 4 if where == "body" else b""
    server = serve(lambda method, target: trickled(body))
    result, elapsed = _timed(lambda: _through_httpx(server.base + "/zeimu"))
    assert result.outcome is Outcome.RETRY and result.error == "timeout: ReadTimeout"
    assert elapsed < LATE


def test_an_injected_httpx_client_does_not_read_an_answer_too_long_to_hold(
    serve: Callable[[Answer], RawServer],
) -> None:
    """A 200 with a 48 MiB body was read whole into memory and handed on as a reply."""
    server = serve(lambda method, target: flooded())
    result = _through_httpx(server.base + "/zeimu")
    assert result.outcome is Outcome.DELIVERED and result.reply is None
    assert result.error == OVERSIZED
    time.sleep(0.2)  # the server notices the closed connection
    assert server.sent < MAX_BODY + 8 * 1024 * 1024


# --- SOAP: calls through a proxy (urllib3) ---------------------------------------------------

SYSTEM = "http://system.invalid:8080/zeimu"  # reachable through the proxy only


def _soap(url: str) -> SendResult:
    transport = SoapTransport()
    try:
        return transport.send(
            _notice(), Endpoint(transport="soap", url=url, timeout_seconds=TIMEOUT)
        )
    finally:
        transport.close()


def _proxy(wsdl: bytes, call: Callable[[], Iterable[bytes]]) -> Answer:
    """A proxy that serves the system's WSDL, and answers the call with ``call()``."""
    return lambda method, target: whole(wsdl) if method == "GET" else call()


@pytest.mark.interop
def test_a_soap_call_through_a_proxy_ends_a_trickled_answer_at_the_timeout(
    serve: Callable[[Answer], RawServer],
    scripted: tuple[Scripted, str],  # noqa: F811
    no_proxy: pytest.MonkeyPatch,
) -> None:
    """urllib3's timeouts are per connect and per read: the call took the trickle's 6 s."""
    proxy = serve(_proxy(scripted[0].wsdl, lambda: trickled(b"")))
    no_proxy.setenv("HTTP_PROXY", proxy.base)
    result, elapsed = _timed(lambda: _soap(SYSTEM))
    assert proxy.requests == [("GET", f"{SYSTEM}?wsdl"), ("POST", SYSTEM)]
    assert result.outcome is Outcome.RETRY and result.error == "timeout: ReadTimeout"
    assert elapsed < LATE


@pytest.mark.interop
def test_a_soap_call_through_a_proxy_does_not_read_an_answer_too_long_to_hold(
    serve: Callable[[Answer], RawServer],
    scripted: tuple[Scripted, str],  # noqa: F811
    no_proxy: pytest.MonkeyPatch,
) -> None:
    """urllib3 read the whole 48 MiB answer into memory (``response.data``)."""
    proxy = serve(_proxy(scripted[0].wsdl, flooded))
    no_proxy.setenv("HTTP_PROXY", proxy.base)
    result = _soap(SYSTEM)
    assert result.outcome is Outcome.RETRY
    assert result.error == f"HTTP 200 {OVERSIZED}"
    time.sleep(0.2)
    assert proxy.sent < MAX_BODY + 8 * 1024 * 1024


# --- SOAP: the WSDL fetch, direct and through a proxy ----------------------------------------


def _wsdl_from(
    serve: Callable[[Answer], RawServer],
    no_proxy: pytest.MonkeyPatch,
    proxied: bool,
    answer: Answer,
) -> tuple[RawServer, str]:
    server = serve(answer)
    if proxied:
        no_proxy.setenv("HTTP_PROXY", server.base)
        return server, SYSTEM
    return server, server.base + "/zeimu"


def _via(proxy: RawServer, proxied: bool) -> str:
    """The end of a WSDL error the proxy carried: it names the proxy (docs/operations.md)."""
    return f" via proxy {proxy.base.removeprefix('http://')} (NO_PROXY)" if proxied else ""


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "proxy"])
def test_a_trickled_wsdl_ends_at_the_timeout(
    serve: Callable[[Answer], RawServer], no_proxy: pytest.MonkeyPatch, proxied: bool
) -> None:
    """``requests.get(timeout=…)`` is per read: the WSDL fetch took the trickle's 6 s."""
    server, url = _wsdl_from(serve, no_proxy, proxied, lambda method, target: trickled(b"<w/>"))
    result, elapsed = _timed(lambda: _soap(url))
    assert result.outcome is Outcome.RETRY
    assert result.error == "timeout: WSDL ReadTimeout" + _via(server, proxied)
    assert elapsed < LATE


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "proxy"])
def test_a_wsdl_too_long_to_hold_is_not_read(
    serve: Callable[[Answer], RawServer], no_proxy: pytest.MonkeyPatch, proxied: bool
) -> None:
    """The 48 MiB WSDL was read whole into memory, then handed to zeep."""
    server, url = _wsdl_from(serve, no_proxy, proxied, lambda method, target: flooded())
    result = _soap(url)
    assert result.outcome is Outcome.RETRY
    assert result.error == f"WSDL HTTP 200 {OVERSIZED}" + _via(server, proxied)
    time.sleep(0.2)
    assert server.sent < MAX_BODY + 8 * 1024 * 1024


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "proxy"])
def test_a_wsdl_redirect_is_not_followed(
    serve: Callable[[Answer], RawServer], no_proxy: pytest.MonkeyPatch, proxied: bool
) -> None:
    """``requests`` followed the WSDL's redirects wherever they led (another host
    included): what the hub loaded as the system's contract was whatever was there."""
    elsewhere = serve(lambda method, target: whole(b"<definitions/>"))
    server, url = _wsdl_from(
        serve,
        no_proxy,
        proxied,
        lambda method, target: whole(b"", "302 Found", f"Location: {elsewhere.base}/x?wsdl"),
    )
    result = _soap(url)
    assert result.outcome is Outcome.RETRY
    assert result.error == "WSDL unexpected HTTP 302 Found" + _via(server, proxied)
    assert elsewhere.requests == []


@pytest.mark.interop
@pytest.mark.parametrize("trickling", ["wsdl", "call"])
def test_an_https_system_with_its_own_ca_ends_a_trickled_answer_at_the_timeout(
    scripted: tuple[Scripted, str],  # noqa: F811
    no_proxy: pytest.MonkeyPatch,
    tmp_path: Path,
    trickling: str,
) -> None:
    """A town's own CA (``REQUESTS_CA_BUNDLE``) sends the WSDL fetch and the calls through
    urllib3: over TLS too, the trickle is cut at the timeout."""
    authority = Authority.create(tmp_path, "town")
    issued = authority.issue(tmp_path, "127.0.0.1", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.certificate, issued.key)
    wsdl = scripted[0].wsdl

    def answer(method: str, target: str) -> Iterable[bytes]:
        if (method == "GET") == (trickling == "wsdl"):
            return trickled(b"<w/>")
        return whole(wsdl)

    server = RawServer(answer, tls=context).start()
    try:
        no_proxy.setenv("REQUESTS_CA_BUNDLE", str(authority.path))
        result, elapsed = _timed(lambda: _soap(server.base + "/zeimu"))
    finally:
        server.stop()
    expected = "timeout: WSDL ReadTimeout" if trickling == "wsdl" else "timeout: ReadTimeout"
    assert result.outcome is Outcome.RETRY and result.error == expected
    assert elapsed < LATE
