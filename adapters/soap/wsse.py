"""Reads a WS-Security UsernameToken from a SOAP request's ``soap:Header/wsse:Security``.

It reads the tree of the adapter's screening parse (the hub's secure parser, the same
defences as the Validate stage: adapters/inbound.py); the Authenticate stage checks the token
(bus/security/wsse.py). The canonical PlatformMessage never carries the Security header.

XML Signature is not supported: a ``ds:Signature`` in the Security header is refused
(RK-AUT013) rather than ignored, so no sender can believe a signed message was verified.
"""

from __future__ import annotations

from lxml import etree

from bus.errors import make_finding
from bus.pipeline import Finding, UsernameToken
from bus.security.wsse import TOKEN_PATH

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
_SECURITY = f"{{{SOAP11}}}Header/{{{WSSE}}}Security"
_TOKEN = f"{{{WSSE}}}UsernameToken"
_SIGNATURE = f".//{{{DSIG}}}Signature"
_MAX_FIELD = 256


def _text(token: etree._Element, tag: str) -> str | None:
    element = token.find(tag)
    if element is None or element.text is None:
        return None
    return element.text.strip()[:_MAX_FIELD]


def username_token(root: etree._Element | None) -> UsernameToken | Finding | None:
    """The request's UsernameToken; ``None`` when it has none; RK-AUT006 when it is
    incomplete; RK-AUT013 when the Security header holds an XML Signature (not supported,
    never silently taken as verified). ``root`` is the parsed request, ``None`` when it did
    not parse (that is left to the Validate stage's findings)."""
    if root is None:
        return None
    security = root.find(_SECURITY)
    if security is None:
        return None
    if security.find(_SIGNATURE) is not None:
        return make_finding("RK-AUT013", path="/Envelope/Header/Security/Signature")
    token = security.find(_TOKEN)
    if token is None:
        return None
    password = token.find(f"{{{WSSE}}}Password")
    fields = (
        _text(token, f"{{{WSSE}}}Username"),
        _text(token, f"{{{WSSE}}}Password"),
        _text(token, f"{{{WSSE}}}Nonce"),
        _text(token, f"{{{WSU}}}Created"),
    )
    if password is None or any(not field for field in fields):
        return make_finding("RK-AUT006", path=TOKEN_PATH)
    username, digest, nonce, created = (field or "" for field in fields)
    return UsernameToken(username, digest, nonce, created, password.get("Type", "")[:_MAX_FIELD])
