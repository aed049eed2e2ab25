"""SOAP 1.1's own checks of a request, made on the screening parse before the pipeline: an
Envelope of another SOAP version (§4.4, VersionMismatch), a header block addressed to the
hub that it must obey but cannot (§4.2.3, MustUnderstand), and WS-Security (a UsernameToken;
an XML Signature is refused). The pipeline rebuilds the PlatformMessage from the platform
Header and the Body and never sees the other blocks, so only an adapter can judge them:
:func:`soap_rules` is the one function every adapter taking the SOAP form calls (the SOAP
endpoint and REST). Its envelope refusals (RK-ENV005/006) go through the pipeline like the
secure parse's (the caller is authenticated first, the refusal audited: adapters/inbound.py);
a WS-Security refusal (RK-AUT006/013) is answered at once, as before, since without a usable
token the pipeline could not tell who is calling and would answer RK-AUT001 instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from adapters.soap.envelope import CLIENT, MUST_UNDERSTAND, SOAP11, VERSION_MISMATCH
from adapters.soap.wsse import WSSE, username_token
from bus.errors import make_finding
from bus.pipeline import Finding, Severity, UsernameToken
from bus.validation.validator import HEADER

SOAP_ENVELOPE = f"{{{SOAP11}}}Envelope"
NEXT_ACTOR = "http://schemas.xmlsoap.org/soap/actor/next"  # SOAP 1.1 §4.2.2: "the next hop"
_SOAP_HEADER = f"{{{SOAP11}}}Header"
MUST_UNDERSTAND_ATTRIBUTE = b"mustUnderstand"  # as it is in any request that has one
_MUST_UNDERSTAND = f"{{{SOAP11}}}mustUnderstand"
_ACTOR = f"{{{SOAP11}}}actor"
_MUST = frozenset({"1", "true"})  # SOAP 1.1 says "1"; some toolkits write xs:boolean "true"
#: The header blocks the hub processes: the platform Header and WS-Security (UsernameToken).
UNDERSTOOD = frozenset({HEADER, f"{{{WSSE}}}Security"})
_MAX_QUOTED = 128
#: SOAP's own fault codes for the refusals made here; every other input refusal is Client.
_FAULTCODES = {"RK-ENV005": MUST_UNDERSTAND, "RK-ENV006": VERSION_MISMATCH}
#: The refusals of :func:`soap_rules` that the pipeline makes (and audits) for the adapter.
PIPELINE_REFUSALS = frozenset(_FAULTCODES)


def soap_rules(root: etree._Element | None, raw: bytes) -> Finding | UsernameToken | None:
    """SOAP 1.1's rules for a request parsed as ``root`` from ``raw``: RK-ENV006 for an
    Envelope of another version, RK-ENV005 for a block the hub must but cannot obey, then
    WS-Security's UsernameToken (RK-AUT006 incomplete, RK-AUT013 an XML Signature).
    ``None`` when there is nothing to obey: a PlatformMessage, a root that did not parse (the
    Validate stage judges those), an Envelope without a token. On the hot path (a 1.1
    Envelope) the header blocks are walked only when the bytes mention ``mustUnderstand``
    at all (an attribute name is never escaped)."""
    if root is None:
        return None
    if root.tag != SOAP_ENVELOPE:
        return version_mismatch(root)
    if MUST_UNDERSTAND_ATTRIBUTE in raw:
        refusal = not_understood(root)
        if refusal is not None:
            return refusal
    return username_token(root)


def faultcode(findings: Iterable[Finding]) -> str:
    """The SOAP 1.1 fault code of a refusal of the caller's input: SOAP's own for
    MustUnderstand and VersionMismatch, else ``soap:Client``."""
    first = next((f for f in findings if f.severity is Severity.ERROR), None)
    return _FAULTCODES.get(first.code, CLIENT) if first is not None else CLIENT


def version_mismatch(root: etree._Element) -> Finding | None:
    """RK-ENV006 for an ``Envelope`` in another namespace than SOAP 1.1's (SOAP 1.2's, none…);
    ``None`` for any other root (the Validate stage judges those)."""
    name = etree.QName(root)
    if root.tag == SOAP_ENVELOPE or name.localname != "Envelope":
        return None
    namespace = (name.namespace or "-")[:_MAX_QUOTED]
    return make_finding("RK-ENV006", path="/Envelope", actual=namespace, expected=SOAP11)


def not_understood(envelope: etree._Element) -> Finding | None:
    """RK-ENV005 for the first ``soap:Header`` block with ``mustUnderstand="1"``, addressed to
    the hub (no ``soap:actor``, or the next hop's), that is not one the hub processes."""
    header = next(envelope.iterchildren(_SOAP_HEADER), None)
    if header is None:
        return None
    for block in header.iterchildren(etree.Element):  # elements only, not comments
        if block.tag in UNDERSTOOD or not _for_the_hub_to_obey(block):
            continue
        name = etree.QName(block)
        return make_finding(
            "RK-ENV005",
            path=f"/Envelope/Header/{name.localname[:_MAX_QUOTED]}",
            actual=name.text[:_MAX_QUOTED],
        )
    return None


def _for_the_hub_to_obey(block: etree._Element) -> bool:
    must = (block.get(_MUST_UNDERSTAND) or "").strip() in _MUST
    return must and (block.get(_ACTOR) or NEXT_ACTOR).strip() == NEXT_ACTOR
