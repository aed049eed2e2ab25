"""What the HTTP edges refuse before the pipeline, through the real ASGI app and a real store:

1. every such refusal (media type, Content-Encoding, body limit, charset, JSON form, Accept,
   unknown service, WS-Security) is in the rejection audit with what is known — adapter,
   service, source address, the caller when a certificate or API key names it, the code, the
   body's size (never its content) — the answer unchanged, written after it, never waiting:
   a flood while the audit cannot write is counted in aggregated records, not queued without
   bound;
2. ``POST /api/v1/validate`` undoes ``Content-Encoding`` and checks the ``charset`` like the
   message endpoints;
3. ``GET /api/v1/messages/{id}`` negotiates its form like the POST (XML status, problem+xml,
   406), and OpenAPI says so.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from sqlalchemy import select

from adapters.rest.problem import PROBLEM_JSON, PROBLEM_XML
from adapters.soap.envelope import NS_SOAP_BINDING, SOAP11
from bus.catalogue import NS_ENVELOPE
from bus.hub import Hub
from bus.resources import schemas_dir
from bus.settings import Settings
from bus.store.audit import UNATTRIBUTED_TENANT, verify_chain
from bus.store.models import AuditRecord
from bus.store.rejection_audit import RejectionAuditWriter
from bus.webapp import create_app
from tests.conftest import config_with_api_key
from tests.support.hub_server import sample, serialize, soap_envelope
from tests.support.soap import fault_codes
from tests.test_rejection_audit import chain_held

API = "/api/v1/messages"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
LIMIT = 10 * 1024 * 1024
RKS = f"{{{NS_SOAP_BINDING}}}"


@pytest.fixture
def keyed_hub(tmp_path: Path) -> Iterator[tuple[Hub, str]]:
    """A hub whose ``juki`` holds an API key."""
    directory, key = config_with_api_key(tmp_path, "juki")
    opened = Hub.open(
        Settings(data_dir=tmp_path / "data", config_dir=directory, dispatch_workers=0)
    )
    try:
        yield opened, key
    finally:
        opened.close()


def _request(
    hub: Hub,
    method: str,
    path: str,
    content: Any = None,
    headers: dict[str, str] | None = None,
    client: str = "192.0.2.7",  # an address no system is allowed from
) -> httpx.Response:
    app = create_app()
    app.state.hub = hub

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            body = content() if callable(content) else content
            return await http.request(method, path, content=body, headers=headers or {})

    return asyncio.run(send())


def _rejected(hub: Hub) -> list[AuditRecord]:
    assert hub.rejections.flush(10)
    with hub.store.sessions() as session:
        query = select(AuditRecord).where(AuditRecord.event == "rejected").order_by(AuditRecord.id)
        records = list(session.scalars(query))
        assert verify_chain(session, UNATTRIBUTED_TENANT).ok
        return records


def _with_block(block: str) -> bytes:
    envelope = etree.fromstring(soap_envelope(sample("LevyNotice")))
    header = envelope.find(f"{{{SOAP11}}}Header")
    assert header is not None
    header.insert(0, etree.fromstring(block))
    return serialize(envelope)


_SIGNED = (
    f'<wsse:Security xmlns:wsse="{WSSE}"><ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo/>'
    "<ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature></wsse:Security>"
)
_INCOMPLETE = (
    f'<wsse:Security xmlns:wsse="{WSSE}"><wsse:UsernameToken>'
    "<wsse:Username>juki</wsse:Username></wsse:UsernameToken></wsse:Security>"
)


async def _oversize() -> AsyncIterator[bytes]:
    """More than the limit, streamed without a Content-Length (refused while arriving)."""
    chunk = b" " * (1024 * 1024)
    for _ in range(11):
        yield chunk


def _levy_xml() -> bytes:
    return serialize(sample("LevyNotice"))


def _shift_jis() -> bytes:
    text = _levy_xml().decode("utf-8").split("?>", 1)[1]  # no XML declaration
    return text.encode("shift_jis", errors="replace")


# (adapter, path, headers, body, expected status, expected code, raw_bytes recorded)
_SOAP = "/soap/LevyNotice"
_REST = f"{API}/LevyNotice"
_EDGE_REFUSALS: list[tuple[str, str, dict[str, str], Any, int, str, bool]] = [
    ("soap", _SOAP, {"Content-Type": "text/plain"}, b"<x/>", 500, "RK-API001", False),
    ("soap", _SOAP, {**SOAP_HEADERS, "Content-Encoding": "br"}, b"<x/>", 500, "RK-API009", False),
    ("soap", _SOAP, SOAP_HEADERS, _oversize, 500, "RK-SEC002", False),
    (
        "soap",
        _SOAP,
        {**SOAP_HEADERS, "Content-Encoding": "gzip"},
        b"\x1f\x8bnot gzip",
        500,
        "RK-API010",
        False,
    ),
    (
        "soap",
        _SOAP,
        {"Content-Type": "text/xml; charset=Shift_JIS"},
        _shift_jis,
        500,
        "RK-API011",
        True,
    ),
    (
        "soap",
        _SOAP,
        {"Content-Type": "text/xml; charset=iso-8859-1"},
        _levy_xml,
        500,
        "RK-API012",
        True,
    ),
    ("soap", _SOAP, SOAP_HEADERS, lambda: _with_block(_SIGNED), 500, "RK-AUT013", True),
    ("soap", _SOAP, SOAP_HEADERS, lambda: _with_block(_INCOMPLETE), 500, "RK-AUT006", True),
    ("rest", _REST, {"Content-Type": "text/plain"}, b"x", 415, "RK-API001", False),
    (
        "rest",
        _REST,
        {"Content-Type": "application/xml", "Accept": "image/png"},
        _levy_xml,
        406,
        "RK-API013",
        False,
    ),
    (
        "rest",
        f"{API}/Nope",
        {"Content-Type": "application/xml"},
        b"<x/>",
        404,
        "RK-API002",
        False,
    ),
    (
        "rest",
        _REST,
        {"Content-Type": "application/xml", "Content-Encoding": "compress"},
        b"<x/>",
        415,
        "RK-API009",
        False,
    ),
    ("rest", _REST, {"Content-Type": "application/xml"}, _oversize, 413, "RK-SEC002", False),
    ("rest", _REST, {"Content-Type": "application/json"}, b"{not json", 400, "RK-API004", True),
    (
        "rest",
        _REST,
        {"Content-Type": "text/xml"},
        lambda: _with_block(_SIGNED),
        401,
        "RK-AUT013",
        True,
    ),
]


def _answered_code(adapter: str, response: httpx.Response) -> str:
    if adapter == "soap":
        faultcode, codes = fault_codes(response)
        assert faultcode == "soap:Client"
        return codes[0]
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    code: str = response.json()["findings"][0]["code"]
    return code


@pytest.mark.parametrize(
    ("adapter", "path", "headers", "body", "status", "code", "sized"),
    _EDGE_REFUSALS,
    ids=[f"{case[0]}-{case[5]}" for case in _EDGE_REFUSALS],
)
def test_a_refusal_before_the_pipeline_is_audited(
    local_hub: Hub,
    adapter: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    code: str,
    sized: bool,
) -> None:
    response = _request(local_hub, "POST", path, body, headers)
    assert response.status_code == status, response.text
    assert _answered_code(adapter, response) == code  # the answer as before
    (record,) = _rejected(local_hub)
    assert record.tenant == UNATTRIBUTED_TENANT
    assert record.actor is None  # known by address only: not identified
    detail = dict(record.detail)
    raw_bytes = detail.pop("raw_bytes", None)
    expected = {
        "codes": [code],
        "adapter": adapter,
        "before_pipeline": True,
        "source_address": "192.0.2.7",
        "credential": None,
    }
    if code != "RK-API002":
        expected["service"] = "LevyNotice"
    assert detail == expected
    assert (raw_bytes is not None) is sized
    if sized:
        assert isinstance(raw_bytes, int) and raw_bytes > 0


def test_the_caller_named_by_its_api_key_is_recorded(keyed_hub: tuple[Hub, str]) -> None:
    hub, key = keyed_hub
    headers = {**SOAP_HEADERS, "Authorization": f"Bearer {key}"}
    response = _request(hub, "POST", _SOAP, _with_block(_SIGNED), headers)
    assert fault_codes(response) == ("soap:Client", ["RK-AUT013"])
    wrong = {**SOAP_HEADERS, "Authorization": "Bearer rk_juki_not-the-key"}
    _request(hub, "POST", _SOAP, _with_block(_SIGNED), wrong)
    known, unknown = _rejected(hub)
    assert (known.actor, known.detail["credential"]) == ("juki", "api_key")
    assert (unknown.actor, unknown.detail["credential"]) == (None, "api_key")
    for record in (known, unknown):
        assert key not in str(record.detail) and "not-the-key" not in str(record.detail)


def test_no_body_content_is_recorded(local_hub: Hub) -> None:
    body = _with_block(_INCOMPLETE)
    _request(local_hub, "POST", _SOAP, body, SOAP_HEADERS)
    (record,) = _rejected(local_hub)
    assert record.detail["raw_bytes"] == len(body)
    text = str(record.detail)
    assert "juki" not in text and "LevyNotice" in text  # the service, not the token's content


def test_an_accepted_message_adds_no_rejection(local_hub: Hub) -> None:
    body = soap_envelope(sample("LevyNotice"))
    response = _request(local_hub, "POST", _SOAP, body, SOAP_HEADERS, client="127.0.0.1")
    assert response.status_code == 200, response.text
    assert _rejected(local_hub) == []


def test_a_flood_while_the_audit_cannot_write_is_answered_and_aggregated(local_hub: Hub) -> None:
    """The writer's queue full (its chain held by a long commit): the refusals are still
    answered at once, none waits, and the ones that found no room are counted in one
    aggregated record per code — the audit grows no faster than the writer can write."""
    plain = {"Content-Type": "text/plain"}
    _request(local_hub, "POST", _SOAP, b"<x/>", plain)  # the chain's head exists
    assert len(_rejected(local_hub)) == 1
    local_hub.rejections.close()
    local_hub.rejections = RejectionAuditWriter(local_hub.store.sessions, max_pending=2)
    refusals = 12
    with chain_held(local_hub):
        started = time.monotonic()
        for _ in range(refusals):
            response = _request(local_hub, "POST", _SOAP, b"<x/>", plain)
            assert fault_codes(response) == ("soap:Client", ["RK-API001"])
        assert time.monotonic() - started < 10
        time.sleep(0.1)
    records = _rejected(local_hub)[1:]
    single = [r for r in records if "refusals" not in r.detail]
    aggregated = [r for r in records if "refusals" in r.detail]
    assert 2 <= len(single) <= 4  # one in flight (≤ 2) and the queue (2)
    assert len(aggregated) >= 1
    assert all(r.detail["codes"] == ["RK-API001"] for r in records)
    assert all("source_address" not in r.detail for r in aggregated)
    assert len(single) + sum(r.detail["refusals"] for r in aggregated) == refusals


# --- 2. /api/v1/validate reads the body as the message endpoints do ----------------------


def test_validate_decodes_a_gzip_body(local_hub: Hub) -> None:
    body = gzip.compress(_levy_xml())
    headers = {"Content-Type": "application/xml", "Content-Encoding": "gzip"}
    response = _request(local_hub, "POST", "/api/v1/validate", body, headers)
    assert response.status_code == 200, response.text
    assert response.json()["valid"] is True and response.json()["service"] == "LevyNotice"


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"Content-Encoding": "br"}, _levy_xml, 415, "RK-API009"),
        ({"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip", 400, "RK-API010"),
        ({"Content-Type": "application/xml; charset=Shift_JIS"}, _shift_jis, 415, "RK-API011"),
        ({"Content-Type": "text/xml; charset=iso-8859-1"}, _levy_xml, 400, "RK-API012"),
    ],
)
def test_validate_refuses_codings_and_charsets_like_the_message_endpoints(
    local_hub: Hub, headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    headers = {"Content-Type": "application/xml", **headers}
    response = _request(local_hub, "POST", "/api/v1/validate", body, headers)
    assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM_JSON)
    assert response.json()["findings"][0]["code"] == code


def test_validate_refuses_a_decompression_bomb_at_the_limit(local_hub: Hub) -> None:
    bomb = gzip.compress(b"\0" * (LIMIT + 1024))
    headers = {"Content-Type": "application/xml", "Content-Encoding": "gzip"}
    response = _request(local_hub, "POST", "/api/v1/validate", bomb, headers)
    assert (response.status_code, response.json()["findings"][0]["code"]) == (413, "RK-SEC002")


# --- 3. the status GET negotiates its form ------------------------------------------------


def _loopback_get(hub: Hub, path: str, headers: dict[str, str]) -> httpx.Response:
    """A GET from loopback (the sample configuration's juki)."""
    app = create_app()
    app.state.hub = hub

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(send())


@pytest.mark.parametrize(
    "accept", ["application/xml", "text/xml", "application/json;q=0.5, text/xml"]
)
def test_the_status_in_xml(local_hub: Hub, accept: str) -> None:
    app = create_app()
    app.state.hub = local_hub
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""

    async def send() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            posted = await client.post(
                _REST, content=serialize(document), headers={"Content-Type": "application/xml"}
            )
            assert posted.status_code == 202, posted.text
            as_json = await client.get(f"{API}/{message_id}")
            as_xml = await client.get(f"{API}/{message_id}", headers={"Accept": accept})
            return as_json, as_xml

    as_json, as_xml = asyncio.run(send())
    media = "application/xml" if accept == "application/xml" else "text/xml"
    assert as_xml.status_code == 200 and as_xml.headers["content-type"].startswith(media)
    status = etree.fromstring(as_xml.content)
    assert status.tag == f"{RKS}MessageStatus"
    expected = as_json.json()
    for name, key in (
        ("messageId", "message_id"),
        ("tenant", "tenant"),
        ("system", "system"),
        ("service", "service"),
        ("kind", "kind"),
        ("status", "status"),
        ("receivedAt", "received_at"),
    ):
        assert status.findtext(f"{RKS}{name}") == expected[key], name
    deliveries = status.findall(f"{RKS}delivery")
    assert [d.findtext(f"{RKS}destination") for d in deliveries] == [
        d["destination"] for d in expected["deliveries"]
    ]
    assert all(d.findtext(f"{RKS}attempts") is not None for d in deliveries)
    # the form is declared: a client can validate it with the binding's own schema
    binding = etree.XMLSchema(etree.parse(str(schemas_dir() / "soap.xsd")))
    assert binding.validate(status), binding.error_log


def test_status_errors_follow_the_negotiated_form(local_hub: Hub) -> None:
    missing = f"{API}/00000000-0000-4000-8000-000000000000"
    xml = _loopback_get(local_hub, missing, {"Accept": "application/xml"})
    assert (xml.status_code, xml.headers["content-type"]) == (404, PROBLEM_XML)
    codes = [e.text for e in etree.fromstring(xml.content).iter(f"{RKS}code")]
    assert codes == ["RK-STO002"]
    refused = _loopback_get(local_hub, missing, {"Accept": "image/png"})
    assert (refused.status_code, refused.headers["content-type"]) == (406, PROBLEM_JSON)
    assert refused.json()["findings"][0]["code"] == "RK-API013"
    plain = _loopback_get(local_hub, missing, {})
    assert (plain.status_code, plain.headers["content-type"]) == (404, PROBLEM_JSON)


def test_openapi_describes_the_status_forms(local_hub: Hub) -> None:
    spec = _loopback_get(local_hub, "/openapi.json", {}).json()
    get = spec["paths"][f"{API}/{{message_id}}"]["get"]
    assert {"application/json", "application/xml"} <= set(get["responses"]["200"]["content"])
    assert list(get["responses"]["406"]["content"]) == [PROBLEM_JSON]
    assert list(get["responses"]["404"]["content"]) == [PROBLEM_JSON, PROBLEM_XML]
    post = spec["paths"][f"{API}/{{service}}"]["post"]
    assert list(post["responses"]["422"]["content"]) == [PROBLEM_JSON, PROBLEM_XML]
    validate = spec["paths"]["/api/v1/validate"]["post"]
    assert {"413", "415"} <= set(validate["responses"])
    assert "400" in validate["responses"]  # RK-API010 / RK-API012
