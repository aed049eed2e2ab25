"""Content digests for the Idempotent Receiver and the audit chain.

The digest is the SHA-256 of the exclusive C14N of the service element. Exclusive C14N alone
drops the namespace context (declarations the element inherits but does not use), yet it keeps
the *prefixes* a sender chose: ``<std:name>`` and ``<s:name>`` canonicalise differently. So the
element is first rebuilt with fixed prefixes (one per namespace URI) and without the
whitespace between child elements (service elements have element-only content), then
canonicalised: the same content written with other prefixes, or pretty-printed differently,
has the same digest.
"""

from __future__ import annotations

import hashlib

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD

SERVICE_PREFIX = f"{{{NS_SERVICE}}}"
_KNOWN_PREFIXES = {NS_SERVICE: "svc", NS_STANDARD: "std", NS_EXTENSION: "ext", NS_ENVELOPE: "env"}


class NoServiceElement(ValueError):
    """The document holds no service element (the Validate stage would have refused it)."""


def service_element(document: etree._Element) -> etree._Element:
    """The one service element of a canonical ``PlatformMessage``."""
    element = next(document.iterchildren(f"{SERVICE_PREFIX}*"), None)
    if element is None:
        raise NoServiceElement("no service element in the document")
    return element


def _namespace(name: str) -> str | None:
    return name[1 : name.index("}")] if name.startswith("{") else None


def _prefix_map(element: etree._Element) -> dict[str, str]:
    """Fixed prefixes: the platform's own, then ``n0``, ``n1``… in document order."""
    uris: dict[str, None] = {}
    for node in element.iter(tag=etree.Element):
        for name in (node.tag, *node.attrib.keys()):
            uri = _namespace(str(name))
            if uri is not None:
                uris.setdefault(uri)
    prefixes: dict[str, str] = {}
    others = 0
    for uri in uris:
        if uri in _KNOWN_PREFIXES:
            prefixes[_KNOWN_PREFIXES[uri]] = uri
        else:
            prefixes[f"n{others}"] = uri
            others += 1
    return prefixes


def _attributes(element: etree._Element) -> dict[str, str]:
    return {str(name): str(value) for name, value in element.attrib.items()}


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _copy_children(source: etree._Element, target: etree._Element) -> None:
    children = [child for child in source if isinstance(child.tag, str)]
    if children and _blank(source.text):
        target.text = None
    else:
        target.text = source.text
    for child in children:
        copy = etree.SubElement(target, child.tag, _attributes(child))
        _copy_children(child, copy)
        copy.tail = None if _blank(child.tail) else child.tail


def normalised(element: etree._Element) -> etree._Element:
    """A copy of ``element`` with fixed prefixes and no inter-element whitespace
    (comments and processing instructions are not content and are left out)."""
    root = etree.Element(element.tag, _attributes(element), nsmap=_prefix_map(element))
    _copy_children(element, root)
    return root


def canonical_bytes(element: etree._Element) -> bytes:
    return etree.tostring(normalised(element), method="c14n", exclusive=True)


def content_digest(element: etree._Element) -> str:
    """SHA-256 hex of the service element's exclusive C14N (prefix- and layout-independent)."""
    return hashlib.sha256(canonical_bytes(element)).hexdigest()


def document_digest(document: etree._Element) -> str:
    """The digest of a ``PlatformMessage``'s service element."""
    return content_digest(service_element(document))
