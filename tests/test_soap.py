"""The inbound SOAP adapter against a real uvicorn server: WSDL and schemas, acknowledgements,
synchronous inquiries, coded Faults (Client for bad input, Server for ours), hostile input."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from adapters.soap.envelope import NS_SOAP_BINDING, SOAP11
from bus.catalogue import NS_ENVELOPE, NS_SERVICE
from tests.support.hub_server import (
    SERVICES,
    HubServer,
    hub_server,
    sample,
    serialize,
    soap_envelope,
)
from tests.support.receivers import wait_for
from tests.support.soap import fault_codes

WSDL = "http://schemas.xmlsoap.org/wsdl/"
XS = "http://www.w3.org/2001/XMLSchema"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("soap")) as server:
        yield server


def _post(hub: HubServer, service: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/soap/{service}", content=body, headers={**SOAP_HEADERS, **headers}, timeout=30
    )


@pytest.mark.parametrize("service", SERVICES)
def test_wsdl_imports_the_served_schemas(hub: HubServer, service: str) -> None:
    response = httpx.get(f"{hub.url}/soap/{service}?wsdl")
    assert response.status_code == 200
    wsdl = etree.fromstring(response.content)
    address = wsdl.find(f".//{{{WSDL}}}port/{{http://schemas.xmlsoap.org/wsdl/soap/}}address")
    assert address is not None and address.get("location") == f"{hub.url}/soap/{service}"
    imports = {i.get("namespace"): i.get("schemaLocation") for i in wsdl.iter(f"{{{XS}}}import")}
    assert imports[NS_SERVICE] == f"{hub.url}/schemas/services/{service}.xsd"
    for location in imports.values():
        schema = httpx.get(str(location))
        assert schema.status_code == 200 and b"xs:schema" in schema.content
    service_xsd = httpx.get(imports[NS_SERVICE] or "").text
    assert 'xml:lang="ja"' in service_xsd  # the Japanese annotations travel with the types


def test_wsdl_address_follows_the_host_the_caller_used(hub: HubServer) -> None:
    port = hub.url.rsplit(":", 1)[1]
    response = httpx.get(f"http://localhost:{port}/soap/LevyNotice?wsdl")
    assert f'location="http://localhost:{port}/soap/LevyNotice"' in response.text


def test_notification_is_acknowledged_after_store(hub: HubServer) -> None:
    document = sample("ResidentChangeNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    response = _post(hub, "ResidentChangeNotice", soap_envelope(document), SOAPAction="")
    assert response.status_code == 200, response.text
    ack = etree.fromstring(response.content).find(f".//{{{NS_SOAP_BINDING}}}Acknowledgement")
    assert ack is not None
    assert ack.findtext(f"{{{NS_SOAP_BINDING}}}messageId") == message_id
    destinations = [e.text for e in ack.iter(f"{{{NS_SOAP_BINDING}}}destination")]
    assert destinations, "the sample route has subscribers"
    wait_for(lambda: message_id in hub.receiver.applied(), timeout=30)
    status = httpx.get(f"{hub.url}/api/v1/messages/{message_id}").json()
    assert status["service"] == "ResidentChangeNotice"


def test_inquiry_is_answered_synchronously_with_a_correlated_reply(hub: HubServer) -> None:
    document = sample("AddresseeInquiry")
    request_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    response = _post(hub, "AddresseeInquiry", soap_envelope(document))
    assert response.status_code == 200, response.text
    root = etree.fromstring(response.content)
    header = root.find(f"{{{SOAP11}}}Header/{{{NS_ENVELOPE}}}Header")
    body = root.find(f"{{{SOAP11}}}Body/{{{NS_SERVICE}}}AddresseeInquiryReply")
    assert header is not None and body is not None
    assert header.findtext(f"{{{NS_ENVELOPE}}}correlationId") == request_id
    assert header.findtext(f"{{{NS_ENVELOPE}}}messageId") not in (None, request_id)


def test_invalid_input_is_a_client_fault_with_the_coded_findings(hub: HubServer) -> None:
    document = sample("LevyNotice", "invalid-RK-XSD002-unknown-tax-item.xml")
    response = _post(hub, "LevyNotice", soap_envelope(document))
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/xml")
    assert fault_codes(response) == ("soap:Client", ["RK-XSD002"])
    finding = etree.fromstring(response.content).find(f".//{{{NS_SOAP_BINDING}}}Finding")
    assert finding is not None
    assert finding.findtext(f"{{{NS_SOAP_BINDING}}}nameJa") == "税目"
    assert finding.findtext(f"{{{NS_SOAP_BINDING}}}messageJa")


def test_another_services_element_is_refused_and_not_stored(hub: HubServer) -> None:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    response = _post(hub, "PaymentNotice", soap_envelope(document))
    assert fault_codes(response) == ("soap:Client", ["RK-ENV004"])
    status = httpx.get(f"{hub.url}/api/v1/messages/{message_id}")
    assert status.status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "RK-SEC001"),
        (b'<?xml version="1.0" encoding="Shift_JIS"?><x/>', "RK-SEC005"),
        ("<x>é</x>".encode("utf-16"), "RK-SEC005"),
        (b"<soap:Envelope", "RK-SEC006"),
        (b"", "RK-SEC008"),
    ],
)
def test_hostile_input_is_refused_as_a_client_fault(hub: HubServer, body: bytes, code: str) -> None:
    response = _post(hub, "ResidentChangeNotice", body)
    assert response.status_code == 500
    assert fault_codes(response) == ("soap:Client", [code])
    assert b"Traceback" not in response.content


def test_oversize_body_is_refused_while_streaming(hub: HubServer) -> None:
    def chunks() -> Iterator[bytes]:  # a message's root: its head shows nothing wrong
        yield b"<soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/envelope/'>"
        for _ in range(11 * 1024):
            yield b"a" * 1024
        yield b"</soap:Envelope>"

    response = httpx.post(
        f"{hub.url}/soap/ResidentChangeNotice", content=chunks(), headers=SOAP_HEADERS, timeout=30
    )
    assert fault_codes(response) == ("soap:Client", ["RK-SEC002"])


def test_provider_trouble_is_a_server_fault(hub: HubServer) -> None:
    document = sample("TaxAssessmentInquiry")
    hub.receiver.stop()
    try:
        response = _post(hub, "TaxAssessmentInquiry", soap_envelope(document))
    finally:
        hub.receiver.start()
    assert fault_codes(response) == ("soap:Server", ["RK-RPL001"])


def test_a_provider_asking_for_time_is_a_503_server_fault_with_its_retry_after(
    hub: HubServer,
) -> None:
    document = sample("TaxAssessmentInquiry")
    hub.receiver.stop()
    hub.receiver.start("--fail-status", "429", "--retry-after", "1")
    try:
        response = _post(hub, "TaxAssessmentInquiry", soap_envelope(document))
    finally:
        hub.receiver.stop()
        hub.receiver.start()
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert fault_codes(response) == ("soap:Server", ["RK-RPL004"])
    time.sleep(1.1)  # the hub's hold on the provider has passed for the tests that follow


def test_unknown_service_and_get_without_wsdl(hub: HubServer) -> None:
    unknown = _post(hub, "NoSuchService", b"<x/>")
    assert unknown.status_code == 404 and fault_codes(unknown) == ("soap:Client", ["RK-API002"])
    plain_get = httpx.get(f"{hub.url}/soap/LevyNotice")
    assert plain_get.status_code == 405 and fault_codes(plain_get)[1] == ["RK-API005"]
    assert httpx.get(f"{hub.url}/schemas/../pyproject.toml").status_code == 404


def test_wrong_api_key_is_refused_not_retried_by_address(hub: HubServer) -> None:
    document = sample("LevyNotice")
    response = _post(hub, "LevyNotice", soap_envelope(document), Authorization="Bearer nope")
    assert fault_codes(response) == ("soap:Client", ["RK-AUT001"])


def test_platform_message_form_is_accepted_too(hub: HubServer) -> None:
    response = _post(hub, "PaymentNotice", serialize(sample("PaymentNotice")))
    assert response.status_code == 200, response.text


def test_head_on_a_wsdl_is_the_gets_headers_without_a_body(hub: HubServer) -> None:
    url = f"{hub.url}/soap/LevyNotice?wsdl"
    get, head = httpx.get(url), httpx.head(url)
    assert head.status_code == 200, head.text
    assert head.content == b""
    for name in ("content-type", "content-length"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PUT", "/soap/LevyNotice", 405, "RK-API005"),
        ("DELETE", "/soap/LevyNotice", 405, "RK-API005"),
        ("PUT", "/soap/NoSuchService", 404, "RK-API002"),
        ("POST", "/soap/", 404, "RK-API002"),
        ("POST", "/soap/LevyNotice/extra", 404, "RK-API002"),
    ],
)
def test_framework_refusals_under_soap_are_client_faults(
    hub: HubServer, method: str, path: str, status: int, code: str
) -> None:
    response = httpx.request(method, f"{hub.url}{path}", content=b"x", headers=SOAP_HEADERS)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/xml")
    assert fault_codes(response) == ("soap:Client", [code])
    if status == 405:
        assert "POST" in response.headers["allow"]


_OTHER_BLOCK = '<t:Trace xmlns:t="urn:example:trace" xmlns:soap="{soap}" {attributes}/>'
_NEXT = "http://schemas.xmlsoap.org/soap/actor/next"


def _with_header_block(document: etree._Element, block: str) -> bytes:
    envelope = etree.fromstring(soap_envelope(document))
    header = envelope.find(f"{{{SOAP11}}}Header")
    assert header is not None
    header.insert(0, etree.fromstring(block))
    return serialize(envelope)


def _stored(hub: HubServer, message_id: str | None) -> bool:
    return httpx.get(f"{hub.url}/api/v1/messages/{message_id}").status_code == 200


@pytest.mark.parametrize(
    "attributes", ['soap:mustUnderstand="1"', f'soap:mustUnderstand="1" soap:actor="{_NEXT}"']
)
def test_a_must_understand_block_the_hub_does_not_process_is_refused(
    hub: HubServer, attributes: str
) -> None:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    block = _OTHER_BLOCK.format(soap=SOAP11, attributes=attributes)
    response = _post(hub, "LevyNotice", _with_header_block(document, block))
    assert response.status_code == 500
    assert fault_codes(response) == ("soap:MustUnderstand", ["RK-ENV005"])
    assert "{urn:example:trace}Trace" in response.text
    assert not _stored(hub, message_id)


@pytest.mark.parametrize(
    "block",
    [
        _OTHER_BLOCK.format(soap=SOAP11, attributes='soap:mustUnderstand="0"'),
        _OTHER_BLOCK.format(soap=SOAP11, attributes=""),
        _OTHER_BLOCK.format(
            soap=SOAP11, attributes='soap:mustUnderstand="1" soap:actor="urn:example:other"'
        ),
        f'<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-'
        f'wssecurity-secext-1.0.xsd" xmlns:soap="{SOAP11}" soap:mustUnderstand="1"/>',
    ],
)
def test_blocks_the_hub_may_ignore_or_processes_are_accepted(hub: HubServer, block: str) -> None:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    response = _post(hub, "LevyNotice", _with_header_block(document, block))
    assert response.status_code == 200, response.text
    assert _stored(hub, message_id)


def test_a_soap_12_envelope_is_a_version_mismatch(hub: HubServer) -> None:
    soap12 = "http://www.w3.org/2003/05/soap-envelope"
    document = sample("LevyNotice")
    body = soap_envelope(document).replace(SOAP11.encode(), soap12.encode())
    response = _post(hub, "LevyNotice", body)
    assert response.status_code == 500
    assert fault_codes(response) == ("soap:VersionMismatch", ["RK-ENV006"])
    assert soap12 in response.text
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    assert not _stored(hub, message_id)


def test_a_second_platform_header_is_refused_not_dropped(hub: HubServer) -> None:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    assert message_id is not None
    envelope = etree.fromstring(soap_envelope(document))
    header = envelope.find(f"{{{SOAP11}}}Header")
    assert header is not None
    second = copy.deepcopy(header[0])
    tenant = second.find(f".//{{{NS_ENVELOPE}}}tenant")
    assert tenant is not None
    tenant.text = "012025"  # another tenant: must not be silently ignored
    header.append(second)
    response = _post(hub, "LevyNotice", serialize(envelope))
    assert fault_codes(response) == ("soap:Client", ["RK-ENV002"])
    assert not _stored(hub, message_id)


def test_body_before_header_is_refused(hub: HubServer) -> None:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    assert message_id is not None
    envelope = etree.fromstring(soap_envelope(document))
    envelope.append(envelope[0])  # the Header moves after the Body
    response = _post(hub, "LevyNotice", serialize(envelope))
    assert fault_codes(response) == ("soap:Client", ["RK-ENV002"])
    assert not _stored(hub, message_id)


def test_soap_attributes_on_the_platform_header_are_not_its_content(hub: HubServer) -> None:
    """A toolkit marking the platform Header block mustUnderstand="1" (it is one the hub
    processes) used to be refused RK-XSD008: the attribute came along into the
    PlatformMessage."""
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    envelope = etree.fromstring(soap_envelope(document))
    header = envelope.find(f"{{{SOAP11}}}Header")
    assert header is not None
    header[0].set(f"{{{SOAP11}}}mustUnderstand", "1")
    response = _post(hub, "LevyNotice", serialize(envelope))
    assert response.status_code == 200, response.text
    assert _stored(hub, message_id)
