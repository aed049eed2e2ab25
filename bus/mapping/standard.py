"""The standard side of a translation: a service element read into a record, and a record
written back as a service element in the XSD's order (:mod:`bus.mapping.layout`).

Writing builds the XML directly (escaped, in layout order) as UTF-8 bytes: it is the hot path
of every inbound translation, and the result is parsed and validated by the normal validator
anyway. The tags are bytes literals and only the values are encoded: encoding the joined text
instead ran every ASCII character of every tag through the UTF-8 encoder's per-character loop.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD
from bus.mapping.layout import Group, Leaf, service_layout
from bus.mapping.operations import alt_for_private_use
from bus.mapping.values import DictRecord, Text

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
    if "&" in text or "<" in text or ">" in text or "\r" in text:  # rare: translate is slow
        return text.translate(_ESCAPE)
    return text


def escape_attr(text: str) -> str:
    return text.translate(_ESCAPE_ATTR)


@cache
def prefixed(tag: str) -> str:
    qname = etree.QName(tag)
    return f"{PREFIXES[qname.namespace or '']}:{qname.localname}"


def _leaf(value: Text, name: str) -> bytes:
    attrs = "".join(f' {k}="{escape_attr(v)}"' for k, v in value.attrs)
    return f"<{name}{attrs}>{escape(value.text)}</{name}>".encode()


def _emit_group(group: Group, depth: int, level: int, lines: list[str], escaping: bool) -> None:
    """Lines appending ``group``'s children of the record ``data{level}`` to ``out``."""
    pad = "    " * depth
    # a text value escaped, or written as it is and kept for write_service's one check
    written = "escape(value).encode()" if escaping else "value.encode()"
    kept = "" if escaping else "; text(value)"
    for child in group.children:
        if isinstance(child, Leaf):
            name = prefixed(child.tag)
            start, end = f"<{name}>".encode(), f"</{name}>".encode()  # one extend: no copy
            lines += [
                f"{pad}value = data{level}.get({child.item!r})",
                f"{pad}if value.__class__ is str:",
                f"{pad}    out += ({start!r}, {written}, {end!r}){kept}",
                f"{pad}elif value is not None:",
                f"{pad}    append(leaf(value, {name!r}))",
            ]
        elif child.repeating:
            lines.append(f"{pad}for member in data{level}.get({child.name!r}, ()):")
            lines.append(f"{pad}    data{level + 1} = member.data")
            _emit_wrapped(child, depth + 1, level + 1, lines, escaping)
        else:
            _emit_wrapped(child, depth, level, lines, escaping)


def _emit_wrapped(group: Group, depth: int, level: int, lines: list[str], escaping: bool) -> None:
    """The group's element around its children; an empty group is left out."""
    pad, name = "    " * depth, prefixed(group.tag)
    lines += [f"{pad}start{depth} = len(out)", f"{pad}append({f'<{name}>'.encode()!r})"]
    _emit_group(group, depth, level, lines, escaping)
    lines += [
        f"{pad}if len(out) == start{depth} + 1:",
        f"{pad}    del out[start{depth}:]",
        f"{pad}else:",
        f"{pad}    append({f'</{name}>'.encode()!r})",
    ]


@cache
def _writer(service: str, escaping: bool) -> Callable[[dict[str, Any]], tuple[list[bytes], str]]:
    """A function generated from the service's layout that renders a record's data in XSD
    order: no tree walk, no isinstance per layout node, the tags precomputed as literals
    (layout names only). It returns the parts and, ``escaping`` false, the text values it
    wrote as they are (joined), for one check whether any needed escaping: a call of
    :func:`escape` per value costs more than that check."""
    element = f"<svc:{service} {NAMESPACE_DECLARATIONS}>".encode(), f"</svc:{service}>".encode()
    lines = ["def write(data0):", f"    out = [{element[0]!r}]", "    append = out.append"]
    lines += ["    texts = []", "    text = texts.append"]
    _emit_group(service_layout(service), 1, 0, lines, escaping)
    lines += [f"    append({element[1]!r})", '    return out, "".join(texts)']
    namespace: dict[str, Any] = {"escape": escape, "leaf": _leaf}
    name = f"<writer {service}{'' if escaping else ' plain'}>"
    exec(compile("\n".join(lines) + "\n", name, "exec"), namespace)
    write: Callable[[dict[str, Any]], tuple[list[bytes], str]] = namespace["write"]
    return write


def write_service(service: str, record: DictRecord) -> bytes:
    """The service element for ``record`` (namespaces declared on it) in UTF-8, joined once."""
    out, texts = _writer(service, False)(record.data)
    if "&" in texts or "<" in texts or ">" in texts or "\r" in texts:  # rare
        out = _writer(service, True)(record.data)[0]
    return b"".join(out)


def read_service(element: etree._Element) -> DictRecord:
    """A service element's items as a record (extension block flattened into it; repeating
    groups as lists). Attributes become a :class:`Text` value.

    The record feeds an outbound section, whose forms have no ``alt``: a 外字's text is read
    as its 代替文字 (:func:`~bus.mapping.operations.alt_for_private_use`), the ``alt``
    attribute kept for an explicit ``from: item@alt``."""
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
            attributes = tuple(sorted((str(k), str(v)) for k, v in child.attrib.items()))
            alt = child.get("alt")
            text = text if alt is None else alt_for_private_use(text, alt)
            record.data[name] = Text(text, attributes)
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
