"""Content digests for the Idempotent Receiver and the audit chain.

The digest is the SHA-256 of the exclusive C14N of the service element. Exclusive C14N alone
drops the namespace context (declarations the element inherits but does not use), yet it keeps
the *prefixes* a sender chose: ``<std:name>`` and ``<s:name>`` canonicalise differently. So the
element is first rebuilt with fixed prefixes (one per namespace URI) and without the
whitespace between child elements (service elements have element-only content), then
canonicalised: the same content written with other prefixes, or pretty-printed differently,
has the same digest.

Most documents already use the platform's prefixes: for them :func:`canonical_bytes` takes a
cheaper road to the same bytes (a C-level copy with the inter-element whitespace removed,
see :func:`_prefixed_copy`); anything else is rebuilt by :func:`normalised`.
"""

from __future__ import annotations

import hashlib
from copy import deepcopy
from functools import lru_cache

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


def _prefixed_copy(element: etree._Element) -> etree._Element | None:
    """What :func:`normalised` builds, when ``element`` already uses the fixed prefixes:
    its copy without inter-element whitespace. None when it does not qualify — an element of
    another namespace or under another prefix, a namespaced attribute, a comment or a
    processing instruction — and the tree must be rebuilt.

    Exclusive C14N writes only the namespace declarations an element visibly uses, so a copy
    whose elements carry the same prefixes for the same URIs canonicalises like the rebuilt
    tree (equality with :func:`normalised` is tested on varied documents)."""
    copy = deepcopy(element)
    for node in copy.iter():
        tag: object = node.tag  # a function for comments and processing instructions
        if not isinstance(tag, str) or node.prefix != _fixed_prefix(tag):
            return None
        names = node.keys()
        if names and any(str(name).startswith("{") for name in names):
            return None
        tail = node.tail
        if tail is not None and not tail.strip():
            node.tail = None
        text = node.text
        if text is not None and not text.strip() and len(node):
            node.text = None
    return copy


@lru_cache(maxsize=1024)
def _fixed_prefix(tag: str) -> str | None:
    """The prefix :func:`normalised` gives an element named ``tag``; "" (no prefix an element
    can have) for a namespace it numbers ``n0``, ``n1``…, which does not qualify."""
    uri = _namespace(tag)
    return None if uri is None else _KNOWN_PREFIXES.get(uri, "")


def canonical_bytes(element: etree._Element) -> bytes:
    tree = _prefixed_copy(element)
    if tree is None:
        tree = normalised(element)
    return etree.tostring(tree, method="c14n", exclusive=True)


def content_digest(element: etree._Element) -> str:
    """SHA-256 hex of the service element's exclusive C14N (prefix- and layout-independent)."""
    return hashlib.sha256(canonical_bytes(element)).hexdigest()


def document_digest(document: etree._Element) -> str:
    """The digest of a ``PlatformMessage``'s service element."""
    return content_digest(service_element(document))
