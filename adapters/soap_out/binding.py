"""The by-name SOAP binding: platform messages ↔ a connected system's own SOAP contract.

A system that speaks SOAP publishes its own WSDL (code-first services, as vendors write them).
It names its operations after the platform services (``ResidentChangeNotice``) and its fields
after the catalogue ids (``addresseeNumber``), in its own namespace. Going out, the platform
Header fills the operation's header block and the service element's items fill the body, each
by local name; items the system does not declare are left out, and the Extension block is
flattened (item ids are unique across the standard and extension namespaces). Coming back, an
inquiry's answer is rebuilt into the platform ``…Reply`` by walking renkei's own XSD content
model, so the reply is validated by the hub exactly like any inbound message.

A system whose names differ gets a mapping file (DESIGN §5) applied before the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Union

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD, XS
from bus.mapping.operations import alt_for_private_use
from bus.samplegen.content_model import ContentModel

# A field value: an item's text, a group of fields, or the occurrences of a repeated element.
Value = Union[str, "Fields", list["Value"]]
Fields = dict[str, Value]

EXTENSION_BLOCK = "Extension"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class BindingError(ValueError):
    """The platform message cannot be put into (or read back from) the system's contract."""


@dataclass(frozen=True, slots=True)
class Request:
    """A platform message taken apart for a SOAP call."""

    service: str
    header: Fields
    fields: Fields


def _local(tag: str) -> str:
    """The local name of a Clark-notation tag (``{namespace}name`` or ``name``)."""
    return tag.rpartition("}")[2]


def element_value(element: etree._Element) -> Value:
    """An element's text when it is a leaf, else its children by local name (a name that
    occurs more than once becomes a list). The system's contract has no ``alt``: a 外字's
    text is its 代替文字 (:func:`~bus.mapping.operations.alt_for_private_use`)."""
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        text, alt = element.text or "", element.get("alt")
        return text if alt is None else alt_for_private_use(text, alt)
    fields: Fields = {}
    for child in children:
        name, value = _local(child.tag), element_value(child)
        if name not in fields:
            fields[name] = value
            continue
        previous = fields[name]
        fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return fields


def request_parts(body: bytes) -> Request:
    """The Header and the service element's fields of a PlatformMessage."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as error:
        raise BindingError(f"not XML: {error.msg}") from None
    children = [child for child in root if isinstance(child.tag, str)]
    if len(children) != 2 or children[0].tag != f"{{{NS_ENVELOPE}}}Header":
        raise BindingError("not a PlatformMessage (Header + one service element)")
    header, service = (element_value(child) for child in children)
    if not isinstance(header, dict) or not isinstance(service, dict):
        raise BindingError("empty Header or service element")
    extension = service.pop(EXTENSION_BLOCK, None)
    if isinstance(extension, dict):
        service.update(extension)
    return Request(_local(children[1].tag), header, service)


# --- coming back: a system's answer rebuilt by renkei's content model -----------------------


@cache
def _model() -> ContentModel:
    return ContentModel()


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    return f"{{{node.nsmap[prefix or None]}}}{local}"


def _content(type_node: etree._Element | None) -> etree._Element | None:
    """The sequence or choice holding a complex type's elements (None: text content)."""
    if type_node is None:
        return None
    for tag in ("sequence", "choice"):
        found = type_node.find(f"{{{XS}}}{tag}")
        if found is not None:
            return found
    return None


_PARTICLES = (f"{{{XS}}}element", f"{{{XS}}}sequence", f"{{{XS}}}choice")

# The content model's nodes live as long as the process (``_model`` is cached), so what is
# read from them is cached per node; a cache key holds its lxml proxy, which keeps it unique.


@cache
def _particles(group: etree._Element) -> tuple[etree._Element, ...]:
    return tuple(node for node in group if node.tag in _PARTICLES)


@cache
def _declaration(node: etree._Element, namespace: str) -> tuple[str, etree._Element | None]:
    """(the Clark name, the content group or None for a leaf) of an xs:element particle."""
    if node.get("ref"):
        tag = _qname(node, node.get("ref", ""))
        declared = _model().elements[tag]
    else:
        tag, declared = f"{{{namespace}}}{node.get('name')}", node
    inline = declared.find(f"{{{XS}}}complexType")
    if inline is None and declared.get("type"):
        inline = _model().complex_types.get(_qname(declared, declared.get("type", "")))
    return tag, _content(inline)


def _occurrences(value: Value | None, repeats: bool) -> list[Value]:
    if value is None:
        return []
    if isinstance(value, list):
        return value if repeats else value[:1]
    return [value]


def _present(group: etree._Element, source: Fields, namespace: str) -> bool:
    """Whether every required element of a choice branch has a value."""
    for node in _particles(group):
        if node.tag != f"{{{XS}}}element":
            continue
        tag, _ = _declaration(node, namespace)
        if node.get("minOccurs", "1") != "0" and _local(tag) not in source:
            return False
    return True


def _fill(parent: etree._Element, group: etree._Element, source: Fields, namespace: str) -> None:
    if group.tag == f"{{{XS}}}choice":
        branch = next((b for b in _particles(group) if _present(b, source, namespace)), None)
        if branch is not None:
            _fill(parent, branch, source, namespace)
        return
    for node in _particles(group):
        if node.tag != f"{{{XS}}}element":
            _fill(parent, node, source, namespace)
            continue
        tag, content = _declaration(node, namespace)
        name = _local(tag)
        if content is not None and name == EXTENSION_BLOCK and name not in source:
            block = etree.SubElement(parent, tag)
            _fill(block, content, source, namespace)  # a flat answer: items at the top
            if len(block) == 0:
                parent.remove(block)
            continue
        for value in _occurrences(source.get(name), node.get("maxOccurs", "1") != "1"):
            child = etree.SubElement(parent, tag)
            if content is None:
                child.text = value if isinstance(value, str) else ""
            elif isinstance(value, dict):
                _fill(child, content, value, tag.partition("}")[0][1:])


def rebuild(tag: str, source: Fields) -> etree._Element:
    """The platform element ``tag`` (a service element or the envelope Header) with its
    content taken from ``source`` by local name, in the order renkei's XSD prescribes."""
    declared = _model().elements.get(tag)
    if declared is None:
        raise BindingError(f"no such platform element: {tag}")
    _, content = _declaration(declared, tag.partition("}")[0][1:])
    element = etree.Element(tag)
    if content is not None:
        _fill(element, content, source, tag.partition("}")[0][1:])
    return element


def platform_reply(service: str, header: Fields, body: Fields) -> bytes:
    """A ``PlatformMessage`` holding ``…Reply``, from a system's answer (header and body)."""
    message = etree.Element(
        f"{{{NS_ENVELOPE}}}PlatformMessage",
        nsmap={"env": NS_ENVELOPE, "svc": NS_SERVICE, "std": NS_STANDARD, "ext": NS_EXTENSION},
    )
    message.append(rebuild(f"{{{NS_ENVELOPE}}}Header", header))
    message.append(rebuild(f"{{{NS_SERVICE}}}{service}Reply", body))
    return etree.tostring(message, encoding="UTF-8", xml_declaration=True)
