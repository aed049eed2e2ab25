"""The by-name SOAP binding's way back (adapters/soap_out/binding.py): a system's answer, given
as fields by local name in any order, rebuilt into the platform element in the XSD's order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from lxml import etree

from adapters.soap_out.binding import Fields, Value, element_value, rebuild

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_MESSAGE = "{urn:renkei:platform:envelope:1}PlatformMessage"
SAMPLES = [
    path
    for path in sorted((ROOT / "samples" / "messages").glob("*/valid-*.xml"))
    if etree.parse(str(path)).getroot().tag == PLATFORM_MESSAGE
]


def _shuffled(value: Value, rng: random.Random) -> Value:
    """``value`` with every group's names in a random order (occurrences keep theirs)."""
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    if isinstance(value, str):
        return value
    names = list(value)
    rng.shuffle(names)
    return {name: _shuffled(value[name], rng) for name in names}


def _outline(element: etree._Element) -> list[tuple[str, str]]:
    """Every element's tag and text in document order (attributes are not carried by name:
    a 外字 travels as its 代替文字, docs/mapping-guide.md)."""
    return [
        (node.tag, node.get("alt", node.text or "").strip())
        for node in element.iter()
        if isinstance(node.tag, str)
    ]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fields_in_any_order_rebuild_the_element(path: Path) -> None:
    root = etree.parse(str(path)).getroot()
    rng = random.Random(path.name)
    for element in (root[0], root[1]):  # the Header, the service element
        fields = element_value(element)
        assert isinstance(fields, dict)
        for _ in range(3):
            shuffled = _shuffled(fields, rng)
            assert isinstance(shuffled, dict)
            assert _outline(rebuild(element.tag, shuffled)) == _outline(element)


def test_names_the_element_does_not_declare_are_left_out() -> None:
    tag = "{urn:renkei:platform:service:1}AddresseeInquiryReply"
    source: Fields = {"localGovernmentCode": "412066", "unknownItem": "x", "Result": []}
    rebuilt = rebuild(tag, source)
    assert [child.tag.rpartition("}")[2] for child in rebuilt] == ["localGovernmentCode"]


def test_one_element_rebuilt_from_different_answers_keeps_them_apart() -> None:
    tag = "{urn:renkei:platform:service:1}AddresseeInquiryReply"
    first = rebuild(tag, {"localGovernmentCode": "412066"})
    second = rebuild(tag, {"localGovernmentCode": "414255"})
    assert _outline(first)[1][1] == "412066"
    assert _outline(second)[1][1] == "414255"
