"""The outbound SOAP transport's own HTTP client (adapters/soap_out/transport.py): connections
kept per system, the proxy the environment names, answers decoded, redirects not followed."""

from __future__ import annotations

import gzip
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters.soap_out import SoapTransport
from adapters.soap_out.transport import MAX_DECODED
from bus.dispatch.transport import Outcome, SendResult

from .support.certificates import Authority
from .test_soap_out import FAULT, Scripted, _handler, _notice, _send
from .test_soap_out import samples as samples  # the spyne sample systems (module fixtures)
from .test_soap_out import scripted as scripted

pytestmark = pytest.mark.interop
PROXY_ENV = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


class Recorder(Scripted):
    """The scripted zeimu server, keeping connections alive (HTTP/1.1); it also records each
    POST's request-line path and client port."""

    def __init__(self, wsdl: bytes) -> None:
        super().__init__(wsdl)
        self.calls: list[tuple[str, int]] = []


def _keep_alive(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(_handler(recorder)):  # type: ignore[misc]  # a class made at run time
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            recorder.calls.append((self.path, self.client_address[1]))
            super().do_POST()

    return Handler


def _send_once(url: str) -> SendResult:
    """One message sent by a transport of its own (its pools closed afterwards)."""
    transport = SoapTransport()
    try:
        return _send(transport, _notice(), url)
    finally:
        transport.close()


@pytest.fixture
def recorder(scripted: tuple[Scripted, str]) -> Iterator[tuple[Recorder, str]]:
    made = Recorder(scripted[0].wsdl)  # the zeimu WSDL
    server = ThreadingHTTPServer(("127.0.0.1", 0), _keep_alive(made))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield made, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_calls_to_one_system_share_a_kept_connection(
    recorder: tuple[Recorder, str], no_proxy_environment: pytest.MonkeyPatch
) -> None:
    script, base = recorder
    transport = SoapTransport()
    try:
        for _ in range(3):
            assert _send(transport, _notice(), base + "/zeimu").outcome is Outcome.DELIVERED
    finally:
        transport.close()
    assert [path for path, _ in script.calls] == ["/zeimu"] * 3
    assert len({port for _, port in script.calls}) == 1


def test_the_proxy_the_environment_names_is_used(
    recorder: tuple[Recorder, str], no_proxy_environment: pytest.MonkeyPatch
) -> None:
    script, proxy = recorder
    no_proxy_environment.setenv("HTTP_PROXY", proxy)
    url = "http://system.invalid:8080/zeimu"  # reachable through the proxy only
    assert _send_once(url).outcome is Outcome.DELIVERED
    assert script.calls == [(url, script.calls[0][1])]  # a proxy gets the absolute URL


def test_a_system_the_environment_exempts_is_called_directly(
    recorder: tuple[Recorder, str], no_proxy_environment: pytest.MonkeyPatch
) -> None:
    script, base = recorder
    no_proxy_environment.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    no_proxy_environment.setenv("NO_PROXY", "127.0.0.1")
    assert _send_once(base + "/zeimu").outcome is Outcome.DELIVERED
    assert [path for path, _ in script.calls] == ["/zeimu"]


def test_a_redirect_is_not_followed(
    recorder: tuple[Recorder, str], no_proxy_environment: pytest.MonkeyPatch
) -> None:
    script, base = recorder
    script.answer = (302, b"", {"Location": base + "/elsewhere"})
    result = _send_once(base + "/zeimu")
    assert result.outcome is Outcome.PERMANENT
    assert result.error == "unexpected HTTP 302 Found"


def _deflated(data: bytes, window_bits: int) -> bytes:
    compressor = zlib.compressobj(wbits=window_bits)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", lambda data: _deflated(data, zlib.MAX_WBITS)),  # zlib-wrapped
        ("deflate", lambda data: _deflated(data, -zlib.MAX_WBITS)),  # raw, as some servers
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_a_compressed_fault_is_read(
    recorder: tuple[Recorder, str],
    no_proxy_environment: pytest.MonkeyPatch,
    coding: str,
    compress: Callable[[bytes], bytes],
) -> None:
    script, base = recorder
    fault = compress(FAULT.format(code="Client.SchemaValidationError").encode())
    script.answer = (500, fault, {"Content-Encoding": coding})
    result = _send_once(base + "/zeimu")
    assert result.outcome is Outcome.PERMANENT
    assert result.error == "SOAP Fault Client.SchemaValidationError (HTTP 500)"


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(FAULT.encode())[:-12],  # cut short
        gzip.compress(b"<a/>" + b" " * MAX_DECODED),  # a bomb: 64 KiB that decode to 64 MiB
    ],
    ids=["garbage", "truncated", "bomb"],
)
def test_an_answer_that_does_not_decode_is_a_retry(
    recorder: tuple[Recorder, str], no_proxy_environment: pytest.MonkeyPatch, body: bytes
) -> None:
    script, base = recorder
    script.answer = (200, body, {"Content-Encoding": "gzip"})
    result = _send_once(base + "/zeimu")
    assert result == SendResult(Outcome.RETRY, error="connection: DecodeError")


@pytest.fixture
def https_recorder(
    scripted: tuple[Scripted, str], tmp_path: Path
) -> Iterator[tuple[Recorder, str, Path]]:
    """The keep-alive zeimu server over TLS, its certificate from a town's own CA."""
    authority = Authority.create(tmp_path, "town")
    issued = authority.issue(tmp_path, "127.0.0.1", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.certificate, issued.key)
    made = Recorder(scripted[0].wsdl)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _keep_alive(made))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield made, f"https://127.0.0.1:{server.server_port}", authority.path
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_system_is_checked_against_the_bundle_the_environment_names(
    https_recorder: tuple[Recorder, str, Path], no_proxy_environment: pytest.MonkeyPatch
) -> None:
    script, base, town_ca = https_recorder
    no_proxy_environment.setenv("REQUESTS_CA_BUNDLE", str(town_ca))
    assert _send_once(base + "/zeimu").outcome is Outcome.DELIVERED
    assert [path for path, _ in script.calls] == ["/zeimu"]
    no_proxy_environment.delenv("REQUESTS_CA_BUNDLE")
    refused = _send_once(base + "/zeimu")  # the town's CA is in no default bundle
    assert refused.outcome is Outcome.RETRY
    assert len(script.calls) == 1
