"""A system-wide ``HTTP_PROXY`` on the hub's machine (on LGWAN often set for other software)
and the hub's deliveries to connected systems on the LAN, as docs/operations.md (閉域網) says:
the SOAP transport follows the proxy environment with ``requests``' rules, so a SOAP system,
even on 127.0.0.1, is reached through the proxy unless ``NO_PROXY`` names it; the HTTP
transport never uses an environment proxy. A real proxy that refuses everything (as an LGWAN
proxy's deny page does) and the real spyne / REST sample systems over 127.0.0.1."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lxml import etree

from adapters.http_out import HttpTransport
from adapters.soap_out import SoapTransport
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult, Transport
from samples.systems.launcher import RunningSamples, start

from .support.receivers import free_port

pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[1]
ENV = "urn:renkei:platform:envelope:1"
STD = "urn:renkei:platform:standard:1"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class RefusingProxy(ThreadingHTTPServer):
    """Answers every request, proxied or not, with a 403 page; remembers the request lines."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _Deny)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Deny(BaseHTTPRequestHandler):
    server: RefusingProxy

    def _deny(self) -> None:
        self.server.seen.append(self.requestline)
        body = b"<html><body>Access Denied</body></html>"
        self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_CONNECT = _deny

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSamples]:
    endpoints = {s: f"http://127.0.0.1:{free_port()}/{s}" for s in ("kotei", "kokuho")}
    running = start(endpoints, tmp_path_factory.mktemp("samples"))
    yield running
    running.stop()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RefusingProxy]:
    """The refusing proxy, named by ``HTTP_PROXY``/``HTTPS_PROXY`` (both spellings) and no
    ``NO_PROXY``: a machine-wide proxy setting made for other software."""
    server = RefusingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, server.url)
        monkeypatch.setenv(name.lower(), server.url)
    yield server
    server.shutdown()
    server.server_close()


def _notice(destination: str) -> OutboundMessage:
    path = ROOT / "samples" / "messages" / "ResidentChangeNotice" / "valid-full.xml"
    root = etree.fromstring(path.read_bytes())
    message_id = str(uuid.uuid4())
    root.find(f"{{{ENV}}}Header/{{{ENV}}}messageId").text = message_id  # type: ignore[union-attr]
    root.find(f".//{{{STD}}}changeReason").text = "201"  # type: ignore[union-attr]  # within kotei's enumeration
    tenant = root.findtext(f"{{{ENV}}}Header/{{{ENV}}}client/{{{ENV}}}tenant") or ""
    body = etree.tostring(root, encoding="UTF-8")
    return OutboundMessage(message_id, None, "ResidentChangeNotice", tenant, destination, body)


def _send(transport: Transport, name: str, url: str, destination: str) -> SendResult:
    try:
        endpoint = Endpoint(transport=name, url=url, timeout_seconds=5.0)
        return transport.send(_notice(destination), endpoint)
    finally:
        transport.close()


def test_a_soap_system_on_127_0_0_1_is_reached_through_the_environment_proxy(
    samples: RunningSamples, proxy: RefusingProxy
) -> None:
    url = samples.urls["kotei"]
    result = _send(SoapTransport(), "soap", url, "kotei")
    # only the proxy saw the request; the error says so (its refusal read like the system's)
    host, port = proxy.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith("WSDL HTTP 403 Forbidden")
    assert result.error.endswith(f" via proxy {host}:{port} (NO_PROXY)")
    assert proxy.seen == [f"GET {url}?wsdl HTTP/1.1"]


def test_no_proxy_sends_soap_to_the_lan_system_directly(
    samples: RunningSamples, proxy: RefusingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1,10.0.0.0/8")
    result = _send(SoapTransport(), "soap", samples.urls["kotei"], "kotei")
    assert result.outcome is Outcome.DELIVERED, result.error
    assert proxy.seen == []


def test_an_http_system_is_reached_directly_whatever_the_proxy_environment(
    samples: RunningSamples, proxy: RefusingProxy
) -> None:
    result = _send(HttpTransport(), "http", samples.urls["kokuho"], "kokuho")
    assert result.outcome is Outcome.DELIVERED, result.error
    assert proxy.seen == []
