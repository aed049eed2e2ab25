"""The HTTP edges of the SOAP and REST adapters as a connected system meets them, against a
real uvicorn server: Content-Encoding (gzip, bombs, unknown codings), the Content-Type
charset (RFC 7303), JSON-form paths, readable RK-XSD006, content negotiation, UUID case,
SOAP header rules on REST, XML Signature, the rejection audit of SOAP's own refusals, the
Allow header of 405 answers and the route path below a mount point."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree
from sqlalchemy import select

from adapters.rest.json_form import JsonFormError, to_json, to_xml
from adapters.rest.problem import PROBLEM_JSON
from adapters.soap.envelope import NS_SOAP_BINDING, SOAP11
from bus import webapp
from bus.catalogue import NS_ENVELOPE
from bus.hub import Hub
from bus.store.models import AuditRecord
from bus.webapp import create_app
from tests.support.hub_server import HubServer, hub_server, sample, serialize, soap_envelope
from tests.support.soap import fault_codes

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1/messages"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
XML = {"Content-Type": "application/xml"}
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
LIMIT = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("edges")) as server:
        yield server


def _message_id(document: etree._Element) -> str:
    return document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""


def _soap(hub: HubServer, service: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/soap/{service}", content=body, headers={**SOAP_HEADERS, **headers}, timeout=30
    )


def _rest(hub: HubServer, service: str, body: bytes, **headers: str) -> httpx.Response:
    headers = {**XML, **headers}
    return httpx.post(f"{hub.url}{API}/{service}", content=body, headers=headers, timeout=30)


def _problem(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    return response.status_code, response.json()["findings"][0]["code"]


def _stored(hub: HubServer, message_id: str) -> bool:
    return httpx.get(f"{hub.url}{API}/{message_id}").status_code == 200


# --- 1. Content-Encoding ------------------------------------------------------------------


def test_a_gzip_soap_body_is_decoded(hub: HubServer) -> None:
    document = sample("LevyNotice")
    message_id = _message_id(document)
    body = gzip.compress(soap_envelope(document))
    response = _soap(hub, "LevyNotice", body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert _stored(hub, message_id)


def test_a_gzip_json_body_is_decoded(hub: HubServer) -> None:
    document = sample("NhiEligibilityNotice")
    body = gzip.compress(json.dumps(to_json(document)).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = httpx.post(f"{hub.url}{API}/NhiEligibilityNotice", content=body, headers=headers)
    assert response.status_code == 202, response.text


def _bomb() -> bytes:
    """A small gzip body that decompresses to more than the document limit."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    return b"".join(compressor.compress(zeros) for _ in range(11)) + compressor.flush()


def test_a_decompression_bomb_is_refused_at_the_body_limit(hub: HubServer) -> None:
    bomb = _bomb()
    assert len(bomb) < 64 * 1024
    rest = _rest(hub, "LevyNotice", bomb, **{"Content-Encoding": "gzip"})
    assert _problem(rest) == (413, "RK-SEC002")
    assert str(LIMIT) in rest.json()["findings"][0]["message_en"]
    soap = _soap(hub, "LevyNotice", bomb, **{"Content-Encoding": "gzip"})
    assert (soap.status_code, fault_codes(soap)) == (500, ("soap:Client", ["RK-SEC002"]))


@pytest.mark.parametrize("coding", ["br", "deflate, gzip", "compress"])
def test_an_unknown_content_encoding_is_refused(hub: HubServer, coding: str) -> None:
    body = serialize(sample("LevyNotice"))
    assert _problem(_rest(hub, "LevyNotice", body, **{"Content-Encoding": coding})) == (
        415,
        "RK-API009",
    )
    soap = _soap(
        hub, "LevyNotice", soap_envelope(sample("LevyNotice")), **{"Content-Encoding": coding}
    )
    assert (soap.status_code, fault_codes(soap)) == (500, ("soap:Client", ["RK-API009"]))


def test_a_broken_gzip_body_is_refused(hub: HubServer) -> None:
    truncated = gzip.compress(serialize(sample("LevyNotice")))[:-20]
    response = _rest(hub, "LevyNotice", truncated, **{"Content-Encoding": "gzip"})
    assert _problem(response) == (400, "RK-API010")
    identity = _rest(
        hub, "LevyNotice", serialize(sample("LevyNotice")), **{"Content-Encoding": "identity"}
    )
    assert identity.status_code == 202, identity.text


# --- 2. Content-Type charset (RFC 7303) ---------------------------------------------------


def test_a_charset_contradicting_the_declaration_is_refused(hub: HubServer) -> None:
    document = sample("LevyNotice")
    body = serialize(document)  # declares UTF-8
    content_type = "application/xml; charset=Shift_JIS"
    response = _rest(hub, "LevyNotice", body, **{"Content-Type": content_type})
    assert _problem(response) == (400, "RK-API012")
    assert not _stored(hub, _message_id(document))
    soap = _soap(
        hub,
        "LevyNotice",
        soap_envelope(sample("LevyNotice")),
        **{"Content-Type": "text/xml; charset=iso-8859-1"},
    )
    assert fault_codes(soap) == ("soap:Client", ["RK-API012"])


def test_a_charset_contradicting_the_byte_order_mark_is_refused(hub: HubServer) -> None:
    body = "<x>é</x>".encode("utf-16")
    response = _rest(hub, "LevyNotice", body, **{"Content-Type": "text/xml; charset=Shift_JIS"})
    assert _problem(response) == (400, "RK-API012")
    assert "UTF-16" in response.json()["findings"][0]["message_en"]
    # the document agrees with its charset, which is still not UTF-8
    agreed = _rest(hub, "LevyNotice", body, **{"Content-Type": "text/xml; charset=utf-16"})
    assert _problem(agreed) == (415, "RK-API011")


def test_a_utf8_charset_leaves_a_foreign_document_to_the_secure_parse(hub: HubServer) -> None:
    sjis = soap_envelope(sample("LevyNotice")).replace(b"'UTF-8'", b"'Shift_JIS'")
    soap = _soap(hub, "LevyNotice", sjis, **{"Content-Type": "text/xml; charset=utf-8"})
    assert fault_codes(soap) == ("soap:Client", ["RK-SEC005"])


def test_a_charset_other_than_utf8_is_refused(hub: HubServer) -> None:
    document = sample("ResidentChangeNotice")
    text = serialize(document).decode("utf-8").split("?>", 1)[1]  # no XML declaration
    body = text.encode("shift_jis", errors="replace")
    response = _rest(
        hub, "ResidentChangeNotice", body, **{"Content-Type": "text/xml; charset=Shift_JIS"}
    )
    assert _problem(response) == (415, "RK-API011")
    assert "Shift_JIS" in response.json()["findings"][0]["message_en"]


@pytest.mark.parametrize("charset", ["utf-8", '"UTF-8"', "UTF8"])
def test_a_utf8_charset_is_accepted(hub: HubServer, charset: str) -> None:
    body = serialize(sample("LevyNotice"))
    content_type = f"application/xml; charset={charset}"
    assert _rest(hub, "LevyNotice", body, **{"Content-Type": content_type}).status_code == 202


# --- 3. JSON-form paths -------------------------------------------------------------------


def test_a_json_form_error_in_a_repeated_element_names_that_element(hub: HubServer) -> None:
    form = to_json(sample("RegistrationNotice"))
    form["RegistrationNotice"]["Extension"]["rightHolder"][1]["share"] = "1\u00012"
    with pytest.raises(JsonFormError) as refused:
        to_xml(form)
    assert refused.value.path == "/RegistrationNotice/Extension/rightHolder/1/share"
    response = httpx.post(f"{hub.url}{API}/RegistrationNotice", json=form)
    assert _problem(response) == (400, "RK-API004")
    path = response.json()["findings"][0]["path"]
    assert path == "/RegistrationNotice/Extension/rightHolder/1/share"


def test_json_form_paths_escape_keys_as_json_pointers() -> None:
    with pytest.raises(JsonFormError) as refused:
        to_xml({"Header": {"a/b~c": "x"}})
    assert refused.value.path == "/Header/a~1b~0c"


# --- 4. readable RK-XSD006 ----------------------------------------------------------------


def test_a_type_error_names_the_field_and_a_readable_rule(hub: HubServer) -> None:
    document = sample("LevyNotice")
    amount = next(e for e in document.iter() if etree.QName(e).localname == "levyAmount")
    amount.text = "abc"
    response = httpx.post(f"{hub.url}{API}/LevyNotice", json=to_json(document))
    assert _problem(response) == (422, "RK-XSD006")
    finding = response.json()["findings"][0]
    assert finding["name_ja"] == "調定額"
    assert "調定額" in finding["message_ja"] and "金額（円、0以上）" in finding["message_ja"]
    assert "Amount in yen (non-negative)" in finding["message_en"]
    for message in (finding["message_ja"], finding["message_en"]):
        assert "{urn:" not in message and "}" not in message


def test_a_builtin_type_error_is_readable_too(hub: HubServer) -> None:
    document = sample("LevyNotice")
    issued = document.find(f".//{{{NS_ENVELOPE}}}issuedAt")
    assert issued is not None
    issued.text = "yesterday"
    response = httpx.post(f"{hub.url}{API}/LevyNotice", json=to_json(document))
    finding = next(f for f in response.json()["findings"] if f["code"] == "RK-XSD006")
    assert "{" not in finding["message_ja"] + finding["message_en"]
    assert "タイムゾーン必須" in finding["message_ja"]
    assert "mandatory zone" in finding["message_en"]


# --- 5. content negotiation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "accept", ["text/xml", "application/xml", "application/json;q=0.5, application/xml"]
)
def test_accept_xml_gets_the_xml_acknowledgement(hub: HubServer, accept: str) -> None:
    document = sample("LevyNotice")
    response = _rest(hub, "LevyNotice", serialize(document), Accept=accept)
    assert response.status_code == 202, response.text
    media = "text/xml" if accept == "text/xml" else "application/xml"
    assert response.headers["content-type"].startswith(media)
    ack = etree.fromstring(response.content)
    assert ack.tag == f"{{{NS_SOAP_BINDING}}}Acknowledgement"
    assert ack.findtext(f"{{{NS_SOAP_BINDING}}}messageId") == _message_id(document)
    assert response.headers["location"] == f"{API}/{_message_id(document)}"


def test_accept_xml_gets_errors_in_xml(hub: HubServer) -> None:
    document = sample("LevyNotice", "invalid-RK-XSD002-unknown-tax-item.xml")
    response = _rest(hub, "LevyNotice", serialize(document), Accept="application/xml")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+xml")
    problem = etree.fromstring(response.content)
    ns = "urn:ietf:rfc:7807"
    assert problem.tag == f"{{{ns}}}problem"
    assert problem.findtext(f"{{{ns}}}type") == "urn:renkei:error:RK-XSD002"
    assert problem.findtext(f"{{{ns}}}status") == "422"
    codes = [e.text for e in problem.iter(f"{{{NS_SOAP_BINDING}}}code")]
    assert codes == ["RK-XSD002"]


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/*", ""])
def test_json_is_the_default(hub: HubServer, accept: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = _rest(hub, "LevyNotice", serialize(sample("LevyNotice")), **headers)
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("accept", ["image/png", "application/xml;q=0, application/json;q=0"])
def test_nothing_acceptable_is_406_and_nothing_is_stored(hub: HubServer, accept: str) -> None:
    document = sample("LevyNotice")
    response = _rest(hub, "LevyNotice", serialize(document), Accept=accept)
    assert _problem(response) == (406, "RK-API013")
    assert not _stored(hub, _message_id(document))


# --- 6. UUID case -------------------------------------------------------------------------


def test_an_uppercase_message_id_is_accepted_and_is_the_same_message(hub: HubServer) -> None:
    document = sample("LevyNotice")
    message_id = _message_id(document)
    upper = document.find(f".//{{{NS_ENVELOPE}}}messageId")
    assert upper is not None
    upper.text = message_id.upper()
    first = _soap(hub, "LevyNotice", soap_envelope(document))
    assert first.status_code == 200, first.text
    ack = etree.fromstring(first.content).find(f".//{{{NS_SOAP_BINDING}}}Acknowledgement")
    assert ack is not None and ack.findtext(f"{{{NS_SOAP_BINDING}}}messageId") == message_id
    again = sample("LevyNotice")
    again_id = again.find(f".//{{{NS_ENVELOPE}}}messageId")
    assert again_id is not None
    again_id.text = message_id  # the same message, lowercase
    resent = _rest(hub, "LevyNotice", serialize(again))
    assert resent.status_code == 202 and resent.json()["duplicate"] is True
    assert httpx.get(f"{hub.url}{API}/{message_id.upper()}").status_code == 200


# --- 7, 9. SOAP header rules on REST; XML Signature ---------------------------------------


def _with_block(document: etree._Element, block: str) -> bytes:
    envelope = etree.fromstring(soap_envelope(document))
    header = envelope.find(f"{{{SOAP11}}}Header")
    assert header is not None
    header.insert(0, etree.fromstring(block))
    return serialize(envelope)


_MUST = f'<t:Trace xmlns:t="urn:example:trace" xmlns:soap="{SOAP11}" soap:mustUnderstand="1"/>'
_SIGNED = (
    f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:soap="{SOAP11}" {{must}}>'
    f'<ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo/><ds:SignatureValue>AAAA</ds:SignatureValue>'
    f"</ds:Signature></wsse:Security>"
)


def test_rest_applies_the_soap_must_understand_rule(hub: HubServer) -> None:
    document = sample("LevyNotice")
    response = _rest(
        hub, "LevyNotice", _with_block(document, _MUST), **{"Content-Type": "text/xml"}
    )
    assert _problem(response) == (422, "RK-ENV005")
    assert not _stored(hub, _message_id(document))


def test_rest_applies_the_soap_version_rule(hub: HubServer) -> None:
    soap12 = "http://www.w3.org/2003/05/soap-envelope"
    body = soap_envelope(sample("LevyNotice")).replace(SOAP11.encode(), soap12.encode())
    assert _problem(_rest(hub, "LevyNotice", body)) == (422, "RK-ENV006")


@pytest.mark.parametrize("must", ["", 'soap:mustUnderstand="1"'])
def test_an_xml_signature_is_refused_not_ignored(hub: HubServer, must: str) -> None:
    document = sample("LevyNotice")
    body = _with_block(document, _SIGNED.format(must=must))
    response = _soap(hub, "LevyNotice", body)
    assert (response.status_code, fault_codes(response)) == (500, ("soap:Client", ["RK-AUT013"]))
    assert not _stored(hub, _message_id(document))
    rest = _rest(hub, "LevyNotice", _with_block(sample("LevyNotice"), _SIGNED.format(must=must)))
    assert _problem(rest) == (401, "RK-AUT013")


# --- 8. SOAP's own refusals are audited ---------------------------------------------------


def _asgi_post(hub: Hub, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    app = create_app()
    app.state.hub = hub

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(send())


def _rejected_codes(hub: Hub) -> list[list[str]]:
    assert hub.rejections.flush(10)
    with hub.store.sessions() as session:
        query = select(AuditRecord).where(AuditRecord.event == "rejected").order_by(AuditRecord.id)
        return [record.detail["codes"] for record in session.scalars(query)]


def test_must_understand_and_version_mismatch_refusals_are_audited(local_hub: Hub) -> None:
    must = _with_block(sample("LevyNotice"), _MUST)
    response = _asgi_post(local_hub, "/soap/LevyNotice", must, SOAP_HEADERS)
    assert fault_codes(response) == ("soap:MustUnderstand", ["RK-ENV005"])
    soap12 = "http://www.w3.org/2003/05/soap-envelope"
    body = soap_envelope(sample("LevyNotice")).replace(SOAP11.encode(), soap12.encode())
    response = _asgi_post(local_hub, "/soap/LevyNotice", body, SOAP_HEADERS)
    assert fault_codes(response) == ("soap:VersionMismatch", ["RK-ENV006"])
    rest = _asgi_post(local_hub, f"{API}/LevyNotice", must, {"Content-Type": "text/xml"})
    assert _problem(rest) == (422, "RK-ENV005")
    assert _rejected_codes(local_hub) == [["RK-ENV005"], ["RK-ENV006"], ["RK-ENV005"]]


# --- 10. Allow ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", f"{API}/LevyNotice", {"GET", "POST"}),
        ("HEAD", f"{API}/LevyNotice", {"GET", "POST"}),
        ("DELETE", "/api/v1/validate", {"POST"}),
        ("PUT", "/api/v1/feeds/LevyNotice", {"GET"}),
        ("PUT", "/soap/LevyNotice", {"GET", "HEAD", "POST"}),
        ("GET", "/soap/LevyNotice", {"GET", "HEAD", "POST"}),
    ],
)
def test_allow_lists_every_method_the_path_takes(
    hub: HubServer, method: str, path: str, allowed: set[str]
) -> None:
    response = httpx.request(method, f"{hub.url}{path}")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


# --- 11. the route path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/soap/X", "", "/soap/X"),
        ("/hub/soap/X", "/hub", "/soap/X"),
        ("/hub", "/hub", ""),
        ("/hubby/soap/X", "/hub", "/hubby/soap/X"),
        ("/other/soap/X", "/hub", "/other/soap/X"),
    ],
)
def test_route_path_is_the_path_below_the_mount_point(
    path: str, root_path: str, expected: str
) -> None:
    assert webapp.route_path({"type": "http", "path": path, "root_path": root_path}) == expected
    if not root_path:
        assert webapp.route_path({"type": "http", "path": path}) == expected


def test_no_private_starlette_helper_is_used() -> None:
    private = re.compile(r"starlette\._utils|starlette import _utils")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("adapters", "bus")
        for path in (ROOT / folder).rglob("*.py")
        if private.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_soap_lane_answers_below_a_root_path(local_hub: Hub) -> None:
    app = create_app()
    app.state.hub = local_hub

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path="/hub")
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            body = soap_envelope(sample("LevyNotice"))
            return await client.post("/hub/soap/LevyNotice", content=body, headers=SOAP_HEADERS)

    response = asyncio.run(send())
    assert response.status_code == 200, response.text
