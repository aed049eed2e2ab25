"""zeep (an independent SOAP stack) reads each service's WSDL from the running hub and calls
its operation: a valid message is acknowledged (an inquiry answered with a correlated
reply), an invalid one comes back as a soap:Client Fault carrying the coded finding."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree
from zeep import Client, Settings
from zeep.exceptions import Fault

from adapters.rest.json_form import Node, child_table, to_json
from adapters.soap.envelope import NS_SOAP_BINDING
from bus.catalogue import NS_ENVELOPE, NS_SERVICE
from tests.interop.conftest import INVALID, expected_code
from tests.support.hub_server import INQUIRIES, SERVICES, HubServer, sample

pytestmark = pytest.mark.interop


def _typed(client: Client, tag: str, text: str) -> object:
    """The Python value zeep expects for a global element (e.g. a (year, tz) tuple for
    xs:gYear); a local element or a value zeep cannot read travels as written."""
    try:
        return client.get_element(tag).type.pythonvalue(text)
    except Exception:
        return text


def _zeep_value(client: Client, value: object, node: Node) -> object:
    if isinstance(value, list):
        return [_zeep_value(client, item, node) for item in value]
    if isinstance(value, dict) and ("$" in value or any(k.startswith("@") for k in value)):
        return {("_value_1" if k == "$" else k[1:]): v for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _zeep_value(client, v, node.children[k]) for k, v in value.items()}
    assert isinstance(value, str)
    return _typed(client, node.tag, value)


def _call(hub: HubServer, service: str, document: etree._Element, *, raw: bool = False) -> Any:
    client = Client(f"{hub.url}/soap/{service}?wsdl", settings=Settings(strict=True))
    node = child_table().root[service]
    kwargs = _zeep_value(client, to_json(document)[service], node)
    assert isinstance(kwargs, dict)
    with client.settings(raw_response=raw):
        return getattr(client.service, service)(_soapheaders=[document[0]], **kwargs)


def _message_id(document: etree._Element) -> str:
    return document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""


@pytest.mark.parametrize("service", SERVICES)
def test_valid_message_is_acknowledged(interop_hub: HubServer, service: str) -> None:
    document = sample(service)
    request_id = _message_id(document)
    if service not in INQUIRIES:
        answer = _call(interop_hub, service, document)
        assert answer["messageId"] == request_id and answer["duplicate"] is False
        return
    # zeep 4.3 cannot deserialize an xs:choice of sequences that share optional elements
    # (TaxAssessmentInquiryReply, DelinquencyInquiryReply): the reply is read as XML here.
    response = _call(interop_hub, service, document, raw=True)
    assert response.status_code == 200, response.text
    reply = etree.fromstring(response.content)
    assert reply.findtext(f".//{{{NS_ENVELOPE}}}correlationId") == request_id
    assert reply.find(f".//{{{NS_SERVICE}}}{service}Reply") is not None


@pytest.mark.parametrize("service", SERVICES)
def test_invalid_message_is_the_coded_client_fault(interop_hub: HubServer, service: str) -> None:
    document = sample(service, INVALID[service])
    with pytest.raises(Fault) as fault:
        _call(interop_hub, service, document)
    assert fault.value.code == "soap:Client"
    assert fault.value.detail is not None
    codes = [e.text for e in fault.value.detail.iter(f"{{{NS_SOAP_BINDING}}}code")]
    assert codes[0] == expected_code(service)
