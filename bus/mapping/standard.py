"""The standard side of a translation: a service element read into a record, and a record
written back as a service element in the XSD's order (:mod:`bus.mapping.layout`).

Writing builds the XML text directly (escaped, in layout order): it is the hot path of every
inbound translation, and the result is parsed and validated by the normal validator anyway.
"""

from __future__ import annotations

from functools import cache

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD
from bus.mapping.layout import Group, Leaf, service_layout
from bus.mapping.values import DictRecord, Text, Value

PREFIXES = {NS_SERVICE: "svc", NS_STANDARD: "std", NS_EXTENSION: "ext", NS_ENVELOPE: "env"}
NAMESPACE_DECLARATIONS = " ".join(
    f'xmlns:{prefix}="{uri}"' for uri, prefix in PREFIXES.items() if prefix != "env"
)
_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ESCAPE_ATTR = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)


def escape(text: str) -> str:
    return text.translate(_ESCAPE)


def escape_attr(text: str) -> str:
    return text.translate(_ESCAPE_ATTR)


@cache
def prefixed(tag: str) -> str:
    qname = etree.QName(tag)
    return f"{PREFIXES[qname.namespace or '']}:{qname.localname}"


def _render(group: Group, record: DictRecord, out: list[str]) -> None:
    data = record.data
    for child in group.children:
        if isinstance(child, Leaf):
            value: Value | None = data.get(child.item)
            if value is None:
                continue
            name = prefixed(child.tag)
            if isinstance(value, Text):
                attrs = "".join(f' {k}="{escape_attr(v)}"' for k, v in value.attrs)
                out.append(f"<{name}{attrs}>{escape(value.text)}</{name}>")
            else:
                out.append(f"<{name}>{escape(value)}</{name}>")
        elif child.repeating:
            for member in data.get(child.name, ()):
                _render_group(child, member, out)
        else:
            _render_group(child, record, out)


def _render_group(group: Group, record: DictRecord, out: list[str]) -> None:
    start = len(out)
    name = prefixed(group.tag)
    out.append(f"<{name}>")
    _render(group, record, out)
    if len(out) == start + 1:
        del out[start:]  # an empty group is left out
    else:
        out.append(f"</{name}>")


def write_service(service: str, record: DictRecord) -> str:
    """The service element for ``record`` (namespaces declared on it)."""
    layout = service_layout(service)
    out = [f"<svc:{service} {NAMESPACE_DECLARATIONS}>"]
    _render(layout, record, out)
    out.append(f"</svc:{service}>")
    return "".join(out)


def read_service(element: etree._Element) -> DictRecord:
    """A service element's items as a record (extension block flattened into it; repeating
    groups as lists). Attributes become a :class:`Text` value."""
    record = DictRecord()
    _read_into(element, record, service_layout(etree.QName(element).localname))
    return record


def _read_into(element: etree._Element, record: DictRecord, layout: Group) -> None:
    repeating = {group.tag: group for group in layout.children if isinstance(group, Group)}
    for child in element.iterchildren(tag=etree.Element):
        tag = child.tag
        group = repeating.get(tag)
        if group is not None:
            if group.repeating:
                member = record.group(group.name)
                _read_into(child, member, group)
            else:
                _read_into(child, record, group)
            continue
        name = tag.rpartition("}")[2]
        text = child.text or ""
        if child.attrib:
            attributes = ((str(k), str(v)) for k, v in child.attrib.items())
            record.data[name] = Text(text, tuple(sorted(attributes)))
        else:
            record.data[name] = text


def service_element(document: etree._Element) -> etree._Element | None:
    """The service element of a PlatformMessage (or the element itself if it is one)."""
    if etree.QName(document).namespace == NS_SERVICE:
        return document
    return next(
        (
            child
            for child in document.iterchildren(tag=etree.Element)
            if etree.QName(child).namespace == NS_SERVICE
        ),
        None,
    )
