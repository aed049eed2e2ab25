"""SOAP 1.1's own checks of a request, made on the screening parse before the pipeline: an
Envelope of another SOAP version (§4.4, VersionMismatch) and a header block addressed to the
hub that it must obey but cannot (§4.2.3, MustUnderstand). The pipeline rebuilds the
PlatformMessage from the platform Header and the Body and never sees the other blocks, so
only the adapter can refuse them.
"""

from __future__ import annotations

from lxml import etree

from adapters.soap.envelope import SOAP11
from adapters.soap.wsse import WSSE
from bus.errors import make_finding
from bus.pipeline import Finding
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
