"""What old vendor SOAP stacks (.NET 2.0 ASMX/WSE, Apache Axis 1.4, hand-written Java/COBOL
HTTP clients) really send, against the hub on a real socket (one uvicorn for the module):
Shift_JIS/CP932 bodies refused (never stored as mojibake), SOAPAction not used to choose,
the WS-Addressing blocks WSE and WCF add, a sender that hangs up mid-body, and text beside
the SOAP parts (docs/adapters.md, "Old vendor stacks")."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.catalogue import NS_ENVELOPE
from tests.support.hub_server import HubServer, hub_server, sample, soap_envelope
from tests.support.soap import fault_codes

SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
SERVICE = "ResidentChangeNotice"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubServer, Path]]:
    """The hub, its log (stderr) in a file, and its data directory."""
    tmp = tmp_path_factory.mktemp("soap-legacy")
    log = tmp / "hub.log"
    with log.open("wb") as stderr, hub_server(tmp, stderr=stderr, log_level="info") as server:
        yield server, tmp / "hub-data"


@pytest.fixture
def hub(served: tuple[HubServer, Path]) -> HubServer:
    return served[0]


def _notice() -> tuple[bytes, str]:
    document = sample(SERVICE)
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    assert message_id is not None
    return soap_envelope(document), message_id


def _post(hub: HubServer, body: bytes, headers: dict[str, str | None]) -> httpx.Response:
    sent = {k: v for k, v in {**SOAP_HEADERS, **headers}.items() if v is not None}
    return httpx.post(f"{hub.url}/soap/{SERVICE}", content=body, headers=sent, timeout=30)


def _stored(hub: HubServer, message_id: str) -> bool:
    return httpx.get(f"{hub.url}/api/v1/messages/{message_id}").status_code == 200


def _as_cp932(body: bytes, declared: str) -> bytes:
    text = body.decode("utf-8").replace("encoding='UTF-8'", f"encoding='{declared}'")
    encoded = text.encode("cp932")
    assert not encoded.isascii()  # the sample's Japanese names, in CP932 bytes
    return encoded


@pytest.mark.parametrize(
    ("content_type", "declared", "code"),
    [
        ("text/xml; charset=Shift_JIS", "Shift_JIS", "RK-API011"),
        ("text/xml; charset=Windows-31J", "Windows-31J", "RK-API011"),
        ('text/xml; charset="utf-8"', "Shift_JIS", "RK-SEC005"),
        ("text/xml; charset=UTF8", "Shift_JIS", "RK-SEC005"),
        ("text/xml", "Shift_JIS", "RK-SEC005"),
        ("text/xml", "UTF-8", "RK-SEC006"),  # CP932 bytes under a UTF-8 declaration
    ],
)
def test_a_cp932_body_is_refused_never_stored_as_mojibake(
    hub: HubServer, content_type: str, declared: str, code: str
) -> None:
    body, message_id = _notice()
    response = _post(hub, _as_cp932(body, declared), {"Content-Type": content_type})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/xml")
    assert fault_codes(response) == ("soap:Client", [code])
    assert not _stored(hub, message_id)


@pytest.mark.parametrize(
    "action", ['"urn:renkei:ResidentChangeNotice"', "ResidentChangeNotice", None, '"LevyNotice"']
)
def test_soap_action_does_not_choose_the_operation(hub: HubServer, action: str | None) -> None:
    body, message_id = _notice()
    response = _post(hub, body, {"SOAPAction": action})
    assert response.status_code == 200, response.text
    assert _stored(hub, message_id)


def _wsa(must_understand: str) -> bytes:
    """The WS-Addressing blocks WSE 3.0 (no mustUnderstand) and WCF's SOAP 1.1 WS-Addressing
    bindings (mustUnderstand on Action and To) add, with WSE's Timestamp-only Security."""
    attribute = f' soap:mustUnderstand="{must_understand}"' if must_understand else ""
    return (
        f'<wsa:Action xmlns:wsa="{WSA}"{attribute}>urn:x</wsa:Action>'
        f'<wsa:MessageID xmlns:wsa="{WSA}">urn:uuid:0f0e</wsa:MessageID>'
        f'<wsa:ReplyTo xmlns:wsa="{WSA}"><wsa:Address>{WSA}/role/anonymous</wsa:Address>'
        f'</wsa:ReplyTo><wsa:To xmlns:wsa="{WSA}"{attribute}>http://hub/soap/{SERVICE}</wsa:To>'
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}" soap:mustUnderstand="1">'
        "<wsu:Timestamp><wsu:Created>2026-01-01T00:00:00Z</wsu:Created></wsu:Timestamp>"
        "</wsse:Security>"
    ).encode()


def test_ws_addressing_blocks_are_ignored_unless_they_must_be_understood(hub: HubServer) -> None:
    body, message_id = _notice()
    wse = body.replace(b"<soap:Header>", b"<soap:Header>" + _wsa(""))
    assert _post(hub, wse, {}).status_code == 200
    assert _stored(hub, message_id)
    body, message_id = _notice()
    wcf = body.replace(b"<soap:Header>", b"<soap:Header>" + _wsa("1"))
    response = _post(hub, wcf, {})
    assert fault_codes(response) == ("soap:MustUnderstand", ["RK-ENV005"])
    assert not _stored(hub, message_id)


def _rejected_codes(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "renkei.db") as db:
        rows = db.execute("SELECT detail FROM audit_records WHERE event = 'rejected'").fetchall()
    return [code for (detail,) in rows for code in json.loads(detail).get("codes", [])]


def test_a_sender_hanging_up_mid_body_is_an_audited_refusal_not_a_traceback(
    served: tuple[HubServer, Path],
) -> None:
    """A client that gives up (a timeout, a killed batch job) before its declared
    Content-Length used to escape the endpoint as ClientDisconnect: "Exception in ASGI
    application" with a traceback in the log, and no record of the refusal."""
    hub, data_dir = served
    body, message_id = _notice()
    host, port = hub.url.removeprefix("http://").split(":")
    head = (
        f"POST /soap/{SERVICE} HTTP/1.1\r\nHost: {host}\r\n"
        f'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: ""\r\n'
        f"Content-Length: {len(body) + 100}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode() + body)
        connection.shutdown(socket.SHUT_WR)
        assert connection.recv(1000) == b""  # nobody to answer: closed
    deadline = time.monotonic() + 10
    while "RK-API014" not in _rejected_codes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "RK-API014" in _rejected_codes(data_dir)
    log = (data_dir.parent / "hub.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert not _stored(hub, message_id)
    assert _post(hub, _notice()[0], {}).status_code == 200  # the server carries on


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"<soap:Body>", b"<soap:Body>0000"),  # a COBOL filler field left in front
        (b"</soap:Body>", b"trailing</soap:Body>"),
        (b"<soap:Header>", b"<soap:Header>junk"),
        (b"<soap:Body>", b"junk<soap:Body>"),
    ],
)
def test_text_beside_the_soap_parts_is_refused_not_dropped(
    hub: HubServer, before: bytes, after: bytes
) -> None:
    """Character data in the Envelope, Header or Body (not whitespace) is not part of any
    SOAP 1.1 form: it used to be dropped silently and the rest stored."""
    body, message_id = _notice()
    assert body.count(before) == 1
    response = _post(hub, body.replace(before, after), {})
    assert fault_codes(response) == ("soap:Client", ["RK-ENV002"])
    assert not _stored(hub, message_id)
