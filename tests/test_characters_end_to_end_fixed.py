"""Names in fixed-width records of a UTF-8 layout, where 𠮷 is 4 bytes and a kanji 3: fields
count bytes both ways, and a layout counted in characters (a field cut inside a character)
is told as such (RK-MAP020), wherever the cut falls inside the character."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.mapping import Mapping, load_mapping

LAYOUT = """
system: kokuho
description: 固定長 UTF-8
services:
  NhiEligibilityNotice:
    outbound:
      format: fixed
      encoding: {encoding}
      record_length: 32
      separator: none
      fields:
        - {{to: {{start: 1, bytes: 6}}, from: localGovernmentCode}}
        - {{to: {{start: 7, bytes: 13, pad: full}}, from: name}}
        - {{to: {{start: 20, bytes: 10}}, from: insuredNumber}}
        - {{to: {{start: 30, bytes: 3}}, from: addresseeNumber}}
    inbound: {{derive: outbound}}
"""


def _mapping(tmp_path: Path, encoding: str = "utf-8") -> Mapping:
    path = tmp_path / "kokuho_fixed.yaml"
    path.write_text(textwrap.dedent(LAYOUT.format(encoding=encoding)), encoding="utf-8")
    return load_mapping(path)


def _standard(name: str) -> bytes:
    return (
        '<svc:NhiEligibilityNotice xmlns:svc="urn:renkei:platform:service:1" '
        'xmlns:std="urn:renkei:platform:standard:1"><std:localGovernmentCode>412066'
        "</std:localGovernmentCode><std:insuredNumber>123</std:insuredNumber>"
        f"<std:name>{name}</std:name><std:addresseeNumber>12</std:addresseeNumber>"
        "</svc:NhiEligibilityNotice>"
    ).encode()


@pytest.mark.parametrize("name", ["𠮷田　花", "葛\U000e0100飾", "髙﨑", "𠮷"])
def test_a_name_goes_out_in_bytes_and_comes_back_unchanged(tmp_path: Path, name: str) -> None:
    mapping = _mapping(tmp_path)
    out = mapping.sections[("NhiEligibilityNotice", "outbound")].translate(_standard(name))
    record = out.output
    assert isinstance(record, bytes) and len(record) == 32, out.findings
    field = record[6:19]
    assert field.decode("utf-8").rstrip("\u3000 ") == name
    back = mapping.sections[("NhiEligibilityNotice", "inbound")].translate(record)
    assert back.output is not None, back.findings
    assert f"<std:name>{name}</std:name>".encode() in back.output


def test_a_name_one_byte_too_long_is_refused_in_bytes(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path)
    out = mapping.sections[("NhiEligibilityNotice", "outbound")].translate(
        _standard("𠮷田𠮷𠮷")  # 4 characters, 15 bytes: too long for 13
    )
    assert [f.code for f in out.findings] == ["RK-MAP006"]


@pytest.mark.parametrize("cut", [1, 2, 3], ids=["1-of-4", "2-of-4", "3-of-4"])
def test_a_field_ending_inside_a_four_byte_character_is_a_width_in_characters(
    tmp_path: Path, cut: int
) -> None:
    """The vendor counted 氏名 in characters: 𠮷 (4 bytes) straddles the field's end, with 1,
    2 or 3 of its bytes inside it. Every case is RK-MAP020, never RK-MAP007 "decode"."""
    mapping = _mapping(tmp_path)
    kept = 13 - cut  # bytes of the name field before 𠮷 begins
    assert kept in (10, 11, 12)
    head = "田田田".encode() + b" " * (kept - 9)  # 9 bytes of kanji, then spaces
    kichi = "𠮷".encode()
    insured = kichi[cut:] + b"123"  # the insuredNumber field starts with 𠮷's other bytes
    record = b"412066" + head + kichi[:cut] + insured.ljust(10) + b"012"
    assert len(record) == 32
    out = mapping.sections[("NhiEligibilityNotice", "inbound")].translate(record)
    codes = [f.code for f in out.findings]
    assert "RK-MAP020" in codes, out.findings
    assert "RK-MAP007" not in codes
    [told] = [f for f in out.findings if f.code == "RK-MAP020" and "7–19" in f.message_en]
    assert "count bytes, not characters" in told.message_en


def test_cp932_keeps_telling_a_cut_double_byte_character(tmp_path: Path) -> None:
    """CP932 unchanged: a field cut inside 様 (2 bytes) is RK-MAP020 (2 bytes a character)."""
    mapping = _mapping(tmp_path, "cp932")
    name = "山田花子　　様".encode("cp932")  # 14 bytes: 様 straddles the end of 13
    record = b"412066" + name[:13] + (name[13:] + b"123").ljust(10) + b"012"
    assert len(record) == 32
    out = mapping.sections[("NhiEligibilityNotice", "inbound")].translate(record)
    cut = [f for f in out.findings if f.code == "RK-MAP020"]
    assert cut and "2 bytes" in cut[0].message_en
    assert "RK-MAP007" not in [f.code for f in out.findings]
