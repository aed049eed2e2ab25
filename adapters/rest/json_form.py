"""The JSON form of a platform message, and its conversion to and from the platform XML.

The JSON form mirrors ``<PlatformMessage>``: an object with ``Header`` and the service
element, each keyed by element local name (the catalogue ids, e.g. ``addresseeNumber``)::

    {"Header": {"messageId": "…", "service": {"name": "AddresseeInquiry", "version": "1.0"},
                "client": {"tenant": "412066", "system": "zeimu"}, "issuedAt": "…",
                "protocolVersion": "1.0"},
     "AddresseeInquiry": {"localGovernmentCode": "412066", "addresseeNumber": "0000012345"}}

A leaf is a string (numbers and booleans are accepted and written as XML text); a leaf with
attributes is ``{"$": text, "@iso": …, "@asGiven": "true"}``; a repeating element is an
array. Key order does not matter: children are written in the schema's order, so the result
is the same XML a system would send, and it goes through the same pipeline (nothing is
validated here; a key the schema does not know becomes an element the XSD then refuses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_SERVICE, XS
from bus.samplegen.content_model import ContentModel, content_model

PLATFORM_MESSAGE = f"{{{NS_ENVELOPE}}}PlatformMessage"
HEADER = f"{{{NS_ENVELOPE}}}Header"
TEXT_KEY = "$"
ATTRIBUTE_PREFIX = "@"
MAX_DEPTH = 16  # platform messages nest four levels; anything deeper is not one
_NSMAP = {
    "env": NS_ENVELOPE,
    "svc": NS_SERVICE,
    "std": "urn:renkei:platform:standard:1",
    "ext": "urn:renkei:platform:extension:1",
}


class JsonFormError(ValueError):
    """The JSON cannot be written as XML; ``path`` is where, as a JSON Pointer (RFC 6901):
    ``/AddresseeInquiry/name``, ``/RegistrationNotice/Extension/rightHolder/1/share`` for
    the second of a repeated element."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Node:
    """An element as a child of its parent's content model."""

    tag: str  # Clark name
    position: int  # first appearance in the parent's content model
    repeats: bool  # maxOccurs > 1 on the element or an enclosing particle
    children: dict[str, Node]  # by local name; empty for a leaf


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    return f"{{{node.nsmap[prefix or None]}}}{local}"


class ChildTable:
    """The element tree the XSDs allow under ``PlatformMessage``: for each element, its
    possible children by local name. Local elements are per parent (several services have
    an ``Extension`` of their own), so the table is a tree, not a map by tag."""

    def __init__(self, model: ContentModel) -> None:
        self._model = model
        self._by_content: dict[etree._Element, dict[str, Node]] = {}
        names = ["Header", *model.services()]
        tags = [HEADER, *(f"{{{NS_SERVICE}}}{name}" for name in model.services())]
        self.root: dict[str, Node] = {
            name: Node(tag, i, False, self._children(model.elements[tag]))
            for i, (name, tag) in enumerate(zip(names, tags, strict=True))
        }

    def _children(self, declaration: etree._Element) -> dict[str, Node]:
        content = self._content(declaration)
        if content is None:
            return {}
        known = self._by_content.get(content)
        if known is None:
            known = self._by_content[content] = {}
            self._particles(content, known, repeats=False)
        return known

    def _content(self, declaration: etree._Element) -> etree._Element | None:
        """The complex type with element content, or None for a leaf."""
        type_name = declaration.get("type")
        if type_name is None:
            return declaration.find(f"{{{XS}}}complexType")
        complex_type = self._model.complex_types.get(_qname(declaration, type_name))
        if complex_type is None or complex_type.find(f"{{{XS}}}simpleContent") is not None:
            return None
        return complex_type

    def _particles(self, node: etree._Element, table: dict[str, Node], *, repeats: bool) -> None:
        for particle in node:
            if particle.tag not in (f"{{{XS}}}element", f"{{{XS}}}sequence", f"{{{XS}}}choice"):
                continue
            many = repeats or particle.get("maxOccurs", "1") != "1"
            if particle.tag != f"{{{XS}}}element":
                self._particles(particle, table, repeats=many)
                continue
            if particle.get("ref"):
                tag = _qname(particle, particle.get("ref", ""))
                declaration = self._model.elements[tag]
            else:
                namespace = particle.getroottree().getroot().get("targetNamespace")
                tag, declaration = f"{{{namespace}}}{particle.get('name')}", particle
            local = etree.QName(tag).localname
            known = table.get(local)
            if known is None:
                table[local] = Node(tag, len(table), many, self._children(declaration))
            elif many and not known.repeats:
                table[local] = Node(known.tag, known.position, True, known.children)


@cache
def child_table() -> ChildTable:
    return ChildTable(content_model())


# --- JSON → XML --------------------------------------------------------------------------


def to_xml(data: object) -> bytes:
    """The platform XML for a JSON form; :class:`JsonFormError` when it cannot be written."""
    if not isinstance(data, dict):
        raise JsonFormError("/", "a JSON object with Header and the service element is needed")
    root = etree.Element(PLATFORM_MESSAGE, nsmap=_NSMAP)
    _fill(root, data, child_table().root, "", 1)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _fill(
    element: etree._Element, data: dict[str, Any], table: dict[str, Node], path: str, depth: int
) -> None:
    """Children in schema order; a key the schema does not know goes last, in the parent's
    namespace, for the XSD to refuse."""
    if depth > MAX_DEPTH:
        raise JsonFormError(path or "/", f"nested deeper than {MAX_DEPTH} levels")
    namespace = etree.QName(element).namespace or NS_SERVICE
    entries: list[tuple[int, Node, str, object]] = []
    for key, value in data.items():
        node = table.get(key) or Node(f"{{{namespace}}}{key}", len(table), True, {})
        entries.append((node.position, node, key, value))
    for _, node, key, value in sorted(entries, key=lambda entry: entry[0]):
        child_path = f"{path}/{pointer_token(key)}"
        if not isinstance(value, list):
            if value is not None:
                _element(element, node, value, child_path, depth + 1)
            continue
        for index, item in enumerate(value):
            if isinstance(item, list):  # the field's value is what cannot be written
                raise JsonFormError(child_path, "an array inside an array")
            if item is not None:  # an item's own path: which of the repeats is at fault
                _element(element, node, item, f"{child_path}/{index}", depth + 1)


def _element(parent: etree._Element, node: Node, value: object, path: str, depth: int) -> None:
    try:
        element = etree.SubElement(parent, node.tag)
    except ValueError as error:
        raise JsonFormError(path, "not an XML element name") from error
    if isinstance(value, dict):
        if TEXT_KEY in value or any(str(k).startswith(ATTRIBUTE_PREFIX) for k in value):
            _leaf_with_attributes(element, value, path)
        else:
            _fill(element, value, node.children, path, depth)
        return
    _set_text(element, value, path)


def pointer_token(key: str) -> str:
    """``key`` as one step of a JSON Pointer (RFC 6901): ``~`` and ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _leaf_with_attributes(element: etree._Element, value: dict[str, Any], path: str) -> None:
    for key, item in value.items():
        key_path = f"{path}/{pointer_token(key)}"
        if key == TEXT_KEY:
            _set_text(element, item, path)
        elif key.startswith(ATTRIBUTE_PREFIX):
            try:
                element.set(key[1:], _scalar(item, key_path))
            except ValueError as error:
                if isinstance(error, JsonFormError):
                    raise
                raise JsonFormError(key_path, "not an XML attribute") from error
        else:
            raise JsonFormError(key_path, "a leaf with attributes has only $ and @ keys")


def _set_text(element: etree._Element, value: object, path: str) -> None:
    try:
        element.text = _scalar(value, path)
    except ValueError as error:
        if isinstance(error, JsonFormError):
            raise
        raise JsonFormError(path, "text XML cannot hold (control character)") from error


def _scalar(value: object, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise JsonFormError(path, f"a {type(value).__name__} where text is expected")


# --- XML → JSON --------------------------------------------------------------------------


def to_json(document: etree._Element) -> dict[str, Any]:
    """The JSON form of a canonical ``PlatformMessage`` (e.g. an inquiry's reply)."""
    return _object(document, child_table().root)


def _object(element: etree._Element, table: dict[str, Node]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for child in element.iterchildren(tag=etree.Element):
        local = etree.QName(child).localname
        node = table.get(local)
        value = _value(child, node.children if node is not None else {})
        if node is not None and node.repeats:
            result.setdefault(local, []).append(value)
        else:
            result[local] = value
    return result


def _value(element: etree._Element, table: dict[str, Node]) -> object:
    if len(element):
        return _object(element, table)
    if element.attrib:
        value: dict[str, str] = {TEXT_KEY: element.text or ""}
        value.update({ATTRIBUTE_PREFIX + str(k): str(v) for k, v in element.attrib.items()})
        return value
    return element.text or ""
