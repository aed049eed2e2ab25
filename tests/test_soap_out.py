"""The outbound SOAP transport (zeep) against the spyne sample systems over real HTTP, and its
outcome classification against a scripted local SOAP server."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from adapters.soap_out import SoapTransport, wsdl_schema
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult, transport_for
from bus.validation.validator import Validator
from samples.systems.launcher import RunningSamples, start

from .support.receivers import free_port

pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[1]
ENV = "urn:renkei:platform:envelope:1"
STD = "urn:renkei:platform:standard:1"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSamples]:
    systems = ("juki", "zeimu", "kotei")
    endpoints = {s: f"http://127.0.0.1:{free_port()}/{s}" for s in systems}
    running = start(endpoints, tmp_path_factory.mktemp("samples"))
    yield running
    running.stop()


@pytest.fixture
def transport() -> Iterator[SoapTransport]:
    made = SoapTransport()
    yield made
    made.close()


def _message(service: str, body: bytes, destination: str) -> OutboundMessage:
    root = etree.fromstring(body)
    message_id = str(uuid.uuid4())
    root.find(f"{{{ENV}}}Header/{{{ENV}}}messageId").text = message_id  # type: ignore[union-attr]
    tenant = root.findtext(f"{{{ENV}}}Header/{{{ENV}}}client/{{{ENV}}}tenant") or ""
    return OutboundMessage(
        message_id, None, service, tenant, destination, etree.tostring(root, encoding="UTF-8")
    )


def _sample(service: str, name: str = "valid-full.xml") -> bytes:
    return (ROOT / "samples" / "messages" / service / name).read_bytes()


def _received(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/received", timeout=5) as answer:
        rows: list[dict[str, Any]] = json.loads(answer.read())
        return rows


def _send(
    transport: SoapTransport, message: OutboundMessage, url: str, timeout: float = 5.0
) -> SendResult:
    return transport.send(message, Endpoint(transport="soap", url=url, timeout_seconds=timeout))


def test_registered_under_the_soap_entry_point() -> None:
    assert isinstance(transport_for(Endpoint(transport="soap", url="http://x")), SoapTransport)


@pytest.mark.parametrize("destination", ["zeimu", "kotei"])
def test_a_notice_reaches_the_spyne_system_with_its_message_id(
    samples: RunningSamples, transport: SoapTransport, destination: str
) -> None:
    body = _sample("ResidentChangeNotice")
    root = etree.fromstring(body)
    root.find(f".//{{{STD}}}changeReason").text = "201"  # type: ignore[union-attr]  # within kotei's enumeration
    message = _message("ResidentChangeNotice", etree.tostring(root), destination)
    result = _send(transport, message, samples.urls[destination])
    assert result.outcome is Outcome.DELIVERED, result.error
    [row] = [
        r for r in _received(samples.urls[destination]) if r["message_id"] == message.message_id
    ]
    assert row["service"] == "ResidentChangeNotice" and not row["duplicate"]
    assert row["tenant"] == message.tenant
    number = root.findtext(f".//{{{STD}}}addresseeNumber")
    assert row["fields"]["addresseeNumber"] == number and row["fields"]["changeReason"] == "201"


@pytest.mark.parametrize(
    ("service", "destination", "results"),
    [
        ("AddresseeInquiry", "juki", 1),
        ("TaxAssessmentInquiry", "zeimu", 0),
    ],
)
def test_an_inquiry_comes_back_as_a_valid_platform_reply(
    samples: RunningSamples, transport: SoapTransport, service: str, destination: str, results: int
) -> None:
    root = etree.fromstring(_sample(service, "valid-minimal.xml"))
    body = root[1]
    for child in list(body):
        body.remove(child)
    items = [("localGovernmentCode", "412066"), ("addresseeNumber", "100000000000008")]
    if service == "TaxAssessmentInquiry":
        items += [("taxItem", "01"), ("taxYear", "2025")]
    for name, value in items:
        etree.SubElement(body, f"{{{STD}}}{name}").text = value
    root.find(f"{{{ENV}}}Header/{{{ENV}}}client/{{{ENV}}}tenant").text = "412066"  # type: ignore[union-attr]
    message = _message(service, etree.tostring(root), destination)
    result = _send(transport, message, samples.urls[destination])
    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.reply is not None
    report = Validator().validate(result.reply)
    assert report.valid, [f.code + " " + f.path for f in report.findings]
    assert report.service == f"{service}Reply"
    assert report.envelope is not None
    assert report.envelope.correlation_id == message.message_id
    assert report.envelope.message_id != message.message_id
    reply = etree.fromstring(result.reply)
    assert len(reply.findall(".//{urn:renkei:platform:service:1}Result")) == results
    if service == "TaxAssessmentInquiry":  # zeimu's own data: 佐賀　太郎's 2025 個人住民税
        assert reply.findtext(f".//{{{STD}}}incomeLevyAmount") == "280000"


def test_a_body_breaking_the_systems_facets_is_refused_before_sending(
    samples: RunningSamples, transport: SoapTransport
) -> None:
    """zeep serializes changeReason 107 (改製) although kotei's WSDL enumerates the codes it
    takes:
    the lxml check stops it, and the system never sees it."""
    body = _sample("ResidentChangeNotice")
    root = etree.fromstring(body)
    root.find(f".//{{{STD}}}changeReason").text = "107"  # type: ignore[union-attr]
    message = _message("ResidentChangeNotice", etree.tostring(root), "kotei")
    result = _send(transport, message, samples.urls["kotei"])
    assert result.outcome is Outcome.PERMANENT
    assert result.error is not None and "changeReason" in result.error and "107" not in result.error
    assert all(r["message_id"] != message.message_id for r in _received(samples.urls["kotei"]))


def test_a_service_the_system_does_not_offer_is_permanent(
    samples: RunningSamples, transport: SoapTransport
) -> None:
    message = _message("LevyNotice", _sample("LevyNotice"), "juki")
    result = _send(transport, message, samples.urls["juki"])
    assert result.outcome is Outcome.PERMANENT
    assert result.error == "the system's WSDL has no operation LevyNotice"


# --- classification against a scripted SOAP server (the zeimu WSDL, scripted answers) -----

FAULT = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    "<s:Body><s:Fault><faultcode>s:{code}</faultcode><faultstring>personal 山田太郎</faultstring>"
    "</s:Fault></s:Body></s:Envelope>"
)


class Scripted:
    def __init__(self, wsdl: bytes) -> None:
        self.wsdl = wsdl
        self.answer: tuple[int, bytes, dict[str, str]] = (200, b"", {})
        self.delay = 0.0
        self.posts: list[dict[str, str]] = []


def _handler(script: Scripted) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "text/xml; charset=utf-8", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(200, script.wsdl, {})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.posts.append(dict(self.headers))
            time.sleep(script.delay)
            self._reply(*script.answer)

    return Handler


@pytest.fixture(scope="module")
def scripted(samples: RunningSamples) -> Iterator[tuple[Scripted, str]]:
    with urllib.request.urlopen(samples.urls["zeimu"] + "?wsdl", timeout=5) as answer:
        script = Scripted(answer.read())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_port}/zeimu"
    server.shutdown()
    server.server_close()


def _notice() -> OutboundMessage:
    return _message("ResidentChangeNotice", _sample("ResidentChangeNotice"), "zeimu")


def test_the_message_id_travels_as_http_header_and_header_block(
    scripted: tuple[Scripted, str], transport: SoapTransport
) -> None:
    script, url = scripted
    script.answer, script.delay = (200, b"", {}), 0.0
    message = _notice()
    assert _send(transport, message, url).outcome is Outcome.DELIVERED
    assert script.posts[-1]["Renkei-Message-Id"] == message.message_id
    assert script.posts[-1]["SOAPAction"] == '"ResidentChangeNotice"'


@pytest.mark.parametrize(
    ("status", "body", "headers", "outcome", "retry_after"),
    [
        (
            500,
            FAULT.format(code="Client.SchemaValidationError").encode(),
            {},
            Outcome.PERMANENT,
            None,
        ),
        (500, FAULT.format(code="Server").encode(), {}, Outcome.RETRY, None),
        (503, FAULT.format(code="Server").encode(), {"Retry-After": "30"}, Outcome.RETRY, 30.0),
        (400, b"bad", {}, Outcome.PERMANENT, None),
        (404, b"", {}, Outcome.PERMANENT, None),
        (408, b"", {}, Outcome.RETRY, None),
        (429, b"", {"Retry-After": "7"}, Outcome.RETRY, 7.0),
        (500, b"oops", {}, Outcome.RETRY, None),
        (502, b"", {}, Outcome.RETRY, None),
    ],
)
def test_outcome_classification(
    scripted: tuple[Scripted, str],
    transport: SoapTransport,
    status: int,
    body: bytes,
    headers: dict[str, str],
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    script, url = scripted
    script.answer, script.delay = (status, body, headers), 0.0
    result = _send(transport, _notice(), url)
    assert result.outcome is outcome, result.error
    assert result.retry_after_seconds == retry_after
    assert result.error is not None and "山田" not in result.error


def test_retry_after_as_an_http_date(
    scripted: tuple[Scripted, str], transport: SoapTransport
) -> None:
    script, url = scripted
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    script.answer, script.delay = (429, b"", {"Retry-After": when}), 0.0
    result = _send(transport, _notice(), url)
    assert result.outcome is Outcome.RETRY
    assert result.retry_after_seconds is not None and 100 < result.retry_after_seconds <= 120


def test_a_timeout_is_a_retry(scripted: tuple[Scripted, str], transport: SoapTransport) -> None:
    script, url = scripted
    script.answer, script.delay = (200, b"", {}), 1.0
    try:
        result = _send(transport, _notice(), url, timeout=0.3)
    finally:
        script.delay = 0.0
    assert result.outcome is Outcome.RETRY and result.error is not None
    assert result.error.startswith("timeout")


def test_an_operation_without_a_body_part_is_a_retry_and_the_wsdl_is_read_again(
    scripted: tuple[Scripted, str], transport: SoapTransport
) -> None:
    script, url = scripted
    whole = script.wsdl
    script.wsdl = re.sub(
        rb'<wsdl:message name="ResidentChangeNotice">.*?</wsdl:message>',
        b'<wsdl:message name="ResidentChangeNotice"/>',
        whole,
        flags=re.S,
    )
    script.answer, script.delay = (200, b"", {}), 0.0
    try:
        result = _send(transport, _notice(), url)
    finally:
        script.wsdl = whole
    assert result.outcome is Outcome.RETRY, result.error
    assert result.error == "WSDL: operation ResidentChangeNotice has no body part"
    assert _send(transport, _notice(), url).outcome is Outcome.DELIVERED  # read again


def test_a_wsdl_whose_schemas_are_never_read_whole_is_a_retry_and_not_kept(
    scripted: tuple[Scripted, str], transport: SoapTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every compile of the WSDL's schemas misses its imports (as another thread's parse can
    make it: tests/test_wsdl_schema.py): the delivery waits instead of being dead-lettered as
    invalid for a schema without its elements, and the next send reads the WSDL again."""
    script, url = scripted
    script.answer, script.delay = (200, b"", {}), 0.0
    with monkeypatch.context() as patched:
        patched.setattr(wsdl_schema._Embedded, "resolve", lambda *args, **kwargs: None)
        result = _send(transport, _notice(), url)
    assert result.outcome is Outcome.RETRY, result.error
    assert result.error == "WSDL unreadable: ValueError"
    assert _send(transport, _notice(), url).outcome is Outcome.DELIVERED


def test_a_refused_connection_is_a_retry(transport: SoapTransport) -> None:
    result = _send(transport, _notice(), f"http://127.0.0.1:{free_port()}/zeimu")
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith("connection")
