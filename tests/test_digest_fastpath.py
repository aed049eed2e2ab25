"""The content digest's fast path (a copy of a document that already uses the platform's
prefixes) gives exactly the bytes of the general path (the tree rebuilt by ``normalised``),
on every sample message and on variants written in every way the general path evens out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bus.catalogue import NS_STANDARD
from bus.store.digest import (
    SERVICE_PREFIX,
    _prefixed_copy,
    canonical_bytes,
    normalised,
    service_element,
)

STD = f"{{{NS_STANDARD}}}"


def _with_service_element(path: Path) -> bool:
    document = etree.fromstring(path.read_bytes())
    return next(document.iterchildren(f"{SERVICE_PREFIX}*"), None) is not None


SAMPLES = [
    path
    for path in sorted(
        (Path(__file__).resolve().parent.parent / "samples" / "messages").glob("*/*.xml")
    )
    if _with_service_element(path)
]


def _general(element: etree._Element) -> bytes:
    return etree.tostring(normalised(element), method="c14n", exclusive=True)


def _service(raw: bytes) -> etree._Element:
    return service_element(etree.fromstring(raw))


def _first_leaf(element: etree._Element) -> etree._Element:
    return next(node for node in element.iter(f"{STD}*") if len(node) == 0)


def _first_parent(element: etree._Element) -> etree._Element:
    return next((node for node in element.iter(f"{STD}*") if len(node) > 0), element)


def _compact(element: etree._Element) -> None:
    for node in element.iter():
        node.tail = None
        if len(node):
            node.text = None


def _ideographic_layout(element: etree._Element) -> None:
    for node in element.iter():
        node.tail = "\u3000\n"  # blank to str.strip(), not XML whitespace


def _leaf_blank(element: etree._Element) -> None:
    _first_leaf(element).text = "  \r\n "


def _mixed(element: etree._Element) -> None:
    _first_parent(element).text = "some text"
    _first_leaf(element).tail = " and a tail "


def _comment(element: etree._Element) -> None:
    _first_parent(element).insert(0, etree.Comment(" note "))


def _instruction(element: etree._Element) -> None:
    _first_leaf(element).addnext(etree.ProcessingInstruction("renkei", "x"))


def _namespaced_attribute(element: etree._Element) -> None:
    _first_leaf(element).set("{http://www.w3.org/2001/XMLSchema-instance}nil", "false")


def _plain_attribute(element: etree._Element) -> None:
    _first_leaf(element).set("note", 'a "quoted" <value> & \t tab')


def _foreign_element(element: etree._Element) -> None:
    etree.SubElement(element, "{urn:example:other}extra").text = "x"


def _foreign_default_namespace(element: etree._Element) -> None:
    other = "urn:example:other"
    nsmap: Any = {None: other}  # the default namespace (the stubs want str keys)
    etree.SubElement(element, f"{{{other}}}extra", nsmap=nsmap).text = "x"


def _unqualified_element(element: etree._Element) -> None:
    etree.SubElement(_first_parent(element), "bare").text = "x"


def _escapes(element: etree._Element) -> None:
    _first_leaf(element).text = "a < b & c > d\r"


def _unchanged(element: etree._Element) -> None:
    del element


EDITS: dict[str, Callable[[etree._Element], None]] = {
    "as generated": _unchanged,
    "compact": _compact,
    "ideographic-space layout": _ideographic_layout,
    "blank leaf text": _leaf_blank,
    "mixed content": _mixed,
    "comment": _comment,
    "processing instruction": _instruction,
    "namespaced attribute": _namespaced_attribute,
    "plain attribute": _plain_attribute,
    "foreign element": _foreign_element,
    "foreign default namespace": _foreign_default_namespace,
    "unqualified element": _unqualified_element,
    "escapes": _escapes,
}
QUALIFIES = {"as generated", "compact", "ideographic-space layout", "blank leaf text"}
QUALIFIES |= {"mixed content", "plain attribute", "unqualified element", "escapes"}


def test_samples_exist() -> None:
    assert len(SAMPLES) > 20


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_fast_path_matches_the_general_path(edit: str) -> None:
    for path in SAMPLES:
        element = _service(path.read_bytes())
        EDITS[edit](element)
        assert (_prefixed_copy(element) is not None) == (edit in QUALIFIES), path.name
        assert canonical_bytes(element) == _general(element), path.name


@pytest.mark.parametrize("prefix", ["s:", ""])
def test_other_prefixes_take_the_general_path(prefix: str) -> None:
    """Written under another prefix (or as the default namespace) the copy does not qualify
    (its C14N would differ), and the digest is still the one of the platform's prefixes."""
    element = _service(SAMPLES[0].read_bytes())
    body = etree.tostring(element).decode()
    start, end = body.index(">") + 1, body.rindex("</")
    inner = body[start:end].replace("<std:", f"<{prefix}").replace("</std:", f"</{prefix}")
    declaration = f"xmlns:{prefix[:-1]}" if prefix else "xmlns"
    head = body[:start].replace(">", f' {declaration}="{NS_STANDARD}">', 1)
    rewritten = etree.fromstring(head + inner + body[end:])
    assert next(rewritten.iter(f"{STD}*")).prefix == (prefix[:-1] or None)
    assert _prefixed_copy(rewritten) is None
    assert canonical_bytes(rewritten) == _general(rewritten) == canonical_bytes(element)
