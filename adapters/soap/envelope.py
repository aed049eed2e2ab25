"""SOAP 1.1 responses: the acknowledgement of a notification, an inquiry's reply (its own
Header as a SOAP header block, correlationId = the request's messageId) and Faults whose
detail holds the coded findings (schemas/soap.xsd)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree

from bus.pipeline import Acknowledgement, Finding

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_SOAP_BINDING = "urn:renkei:soap:1"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CONTENT_TYPE = "text/xml; charset=utf-8"
# SOAP 1.1 §4.4.1 fault codes: the caller's input, ours, a header block we cannot obey, a
# root that is not a SOAP 1.1 Envelope.
CLIENT = "soap:Client"
SERVER = "soap:Server"
MUST_UNDERSTAND = "soap:MustUnderstand"
VERSION_MISMATCH = "soap:VersionMismatch"

_RKS = f"{{{NS_SOAP_BINDING}}}"
_NSMAP = {"soap": SOAP11, "rks": NS_SOAP_BINDING}
_OPEN = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<soap:Envelope xmlns:soap="' + SOAP11.encode() + b'">'
)
_CLOSE = b"</soap:Envelope>"
# Finding fields in schema order, as (element, attribute of Finding).
_FINDING_FIELDS = (
    ("code", "code"),
    ("severity", "severity"),
    ("path", "path"),
    ("item", "item"),
    ("nameJa", "name_ja"),
    ("rule", "rule"),
    ("valueMasked", "value_masked"),
    ("messageJa", "message_ja"),
    ("messageEn", "message_en"),
    ("detail", "detail"),
)


def _envelope(header: bytes, body: bytes) -> bytes:
    head = b"<soap:Header>" + header + b"</soap:Header>" if header else b""
    return _OPEN + head + b"<soap:Body>" + body + b"</soap:Body>" + _CLOSE


def _serialize(element: etree._Element) -> bytes:
    return etree.tostring(element, encoding="UTF-8")


# Characters XML 1.0 cannot carry (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` with what XML cannot carry replaced by U+FFFD: a finding may quote the
    caller's input, and the Fault must still be written (found by bench/fuzz_inputs.py)."""
    return _NOT_XML_CHAR.sub("\ufffd", value)


def _finding_element(parent: etree._Element, finding: Finding) -> None:
    element = etree.SubElement(parent, f"{_RKS}Finding")
    for name, attribute in _FINDING_FIELDS:
        value = getattr(finding, attribute)
        if value is not None:
            etree.SubElement(element, f"{_RKS}{name}").text = xml_text(str(value))


def findings_element(parent: etree._Element, findings: Iterable[Finding]) -> etree._Element:
    """``rks:Findings`` under ``parent``, one ``rks:Finding`` each (as in a Fault's detail;
    REST's problem+xml carries the same)."""
    declared = parent.nsmap.get("rks") == NS_SOAP_BINDING
    nsmap = None if declared else {"rks": NS_SOAP_BINDING}
    element = etree.SubElement(parent, f"{_RKS}Findings", nsmap=nsmap)
    for finding in findings:
        _finding_element(element, finding)
    return element


def acknowledgement_element(
    ack: Acknowledgement, findings: Iterable[Finding] = ()
) -> etree._Element:
    """``rks:Acknowledgement`` (schemas/soap.xsd): the SOAP Body of a stored notification,
    and REST's answer to one in XML."""
    root = etree.Element(f"{_RKS}Acknowledgement", nsmap={"rks": NS_SOAP_BINDING})
    etree.SubElement(root, f"{_RKS}messageId").text = ack.message_id
    etree.SubElement(root, f"{_RKS}storedAt").text = ack.stored_at.isoformat()
    etree.SubElement(root, f"{_RKS}duplicate").text = "true" if ack.duplicate else "false"
    for destination in ack.destinations:
        etree.SubElement(root, f"{_RKS}destination").text = destination
    for finding in findings:
        _finding_element(root, finding)
    return root


def acknowledgement(ack: Acknowledgement, findings: Iterable[Finding] = ()) -> bytes:
    """``rks:Acknowledgement``: sent only once the message is stored; warnings included."""
    return _envelope(b"", _serialize(acknowledgement_element(ack, findings)))


def reply(document: etree._Element) -> bytes:
    """An inquiry's validated reply: its canonical PlatformMessage (Header, reply element)
    rebound to SOAP."""
    header, body = document[0], document[1]
    return _envelope(_serialize(header), _serialize(body))


def fault(findings: list[Finding], *, faultcode: str = CLIENT) -> bytes:
    """A SOAP 1.1 Fault: ``soap:Client`` for the caller's input, ``soap:Server`` for ours
    (or another of SOAP's own codes); ``faultstring`` is the first finding's Japanese
    message, ``detail`` all findings."""
    first = findings[0]
    body = etree.Element(f"{{{SOAP11}}}Fault", nsmap=_NSMAP)
    etree.SubElement(body, "faultcode").text = faultcode
    faultstring = etree.SubElement(body, "faultstring")
    faultstring.text = xml_text(f"{first.code} {first.message_ja}")
    faultstring.set(XML_LANG, "ja")
    findings_element(etree.SubElement(body, "detail"), findings)
    return _envelope(b"", _serialize(body))
