"""The administrative character repertoire (DESIGN §3): JIS X 0213 + CP932 + CJK ideographs,
IVS after a base, 外字 (PUA) only with alt; controls, unassigned and emoji refused."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import REGISTRY
from bus.rules import RULES, RuleViolation, charset
from bus.rules.charset import is_clean, text

CLEAN = [
    "",
    "東京都千代田区霞が関一丁目2番3号",
    "ヤマダ　タロウ",
    "ABCabc012 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "髙橋",  # CP932 only (IBM extension)
    "①②～∑",  # CP932 / NEC specials
    "♥𠀋",  # JIS X 0213 only (plane 2 included)
    "か゚",  # JIS X 0213 か + combining semi-voiced mark U+309A
    "ｱｲｳ",  # half-width katakana: in both codecs (the kana rule's XSD refuses it elsewhere)
    "﨑",  # U+FA11 CJK compatibility ideograph
    "𠮷野家",  # U+20BB7 extension B
    "\u3400\U0002a700\U0002b740\U0002b820\U0002ceb0\U0002ebf0\U00030000\U00031350",  # A, C–I
    "\U0002f800",  # compatibility ideographs supplement
]


@pytest.mark.parametrize("value", CLEAN)
def test_repertoire_is_clean(value: str) -> None:
    assert is_clean(value)
    assert text(value, {}) == []


REFUSED = [
    ("😀", "U+1F600"),
    ("❤", "U+2764"),  # in neither codec
    ("\t", "U+0009"),
    ("\n", "U+000A"),
    ("\r", "U+000D"),
    ("\x00", "U+0000"),
    ("\x7f", "U+007F"),
    ("\x85", "U+0085"),  # C1
    ("\u00ad", "U+00AD"),  # soft hyphen: in JIS X 0213 but a format character
    ("\u200b", "U+200B"),  # zero-width space
    ("\ufeff", "U+FEFF"),
    ("\u0378", "U+0378"),  # unassigned
    ("\U0002ffff", "U+2FFFF"),  # noncharacter
    ("\U000323b0", "U+323B0"),  # past extension H
    ("\ud800", "U+D800"),  # a lone surrogate (surrogateescape input)
]


@pytest.mark.parametrize(("value", "actual"), REFUSED)
def test_refused_characters(value: str, actual: str) -> None:
    assert not is_clean("山田" + value)
    assert text("山田" + value + "太郎", {}) == [RuleViolation("RK-DOM020", {"actual": actual})]


def test_heart_and_emoji_are_outside_both_codecs() -> None:
    for ch in "❤😀":
        for codec in ("shift_jis_2004", "cp932"):
            with pytest.raises(UnicodeEncodeError):
                ch.encode(codec)


def test_each_refused_character_reported_once_and_capped() -> None:
    assert text("😀a😀b😀", {}) == [RuleViolation("RK-DOM020", {"actual": "U+1F600"})]
    many = "".join(chr(0x1F600 + i) for i in range(30))
    assert len(text(many, {})) == 10


def test_emoji_presentation_selector_is_not_a_second_error() -> None:
    assert text("❤\ufe0f", {}) == [RuleViolation("RK-DOM020", {"actual": "U+2764"})]


@pytest.mark.parametrize(
    "value", ["葛\U000e0100", "辻\U000e0101城", "葛\ufe00", "\ue000\U000e0100"]
)
def test_variation_selector_after_a_base(value: str) -> None:
    assert not is_clean(value)  # a selector takes the slow path …
    assert text(value, {"alt": "葛"}) == []  # … and passes there


@pytest.mark.parametrize(
    "value", ["\U000e0100葛", "葛\U000e0100\U000e0101", "\ufe00", "\U000e01ef"]
)
def test_stray_variation_selector(value: str) -> None:
    assert text(value, {}) == [RuleViolation("RK-DOM022", {})]


@pytest.mark.parametrize("pua", ["\ue000", "\uf8ff", "\U000f0000", "\U0010fffd"])
def test_private_use_needs_alt(pua: str) -> None:
    value = "山" + pua + "太郎"
    assert not is_clean(value)
    assert text(value, {}) == [RuleViolation("RK-DOM021", {})]
    assert text(value, {"alt": "崎"}) == []


@pytest.mark.parametrize("alt", ["", " ", "　"])
def test_blank_alt_is_no_alt(alt: str) -> None:
    assert text("\ue000", {"alt": alt}) == [RuleViolation("RK-DOM021", {})]


def test_alt_itself_in_repertoire_without_pua() -> None:
    assert text("\ue000", {"alt": "\ue001"}) == [RuleViolation("RK-DOM020", {"actual": "U+E001"})]
    assert text("\ue000", {"alt": "崎😀"}) == [RuleViolation("RK-DOM020", {"actual": "U+1F600"})]
    assert text("山田", {"alt": "崎"}) == []  # an alt without 外字 is harmless


def test_other_attributes_checked() -> None:
    assert text("山田", {"iso": "2024-01-01\n"}) == [
        RuleViolation("RK-DOM020", {"actual": "U+000A"})
    ]
    assert text("山田", {"note": "\ue000"}) == [RuleViolation("RK-DOM020", {"actual": "U+E000"})]


def test_codes_registered() -> None:
    for code in ("RK-DOM020", "RK-DOM021", "RK-DOM022"):
        assert code in REGISTRY


@pytest.mark.parametrize("rule", ["text", "kana", "date_event", "date_deadline"])
def test_repertoire_rules(rule: str) -> None:
    assert RULES[rule]("ヤマダ　タロウ", {}) == []
    assert RULES[rule]("ヤマダ😀", {}) == [RuleViolation("RK-DOM020", {"actual": "U+1F600"})]


def _encodes(ch: str) -> bool:
    for codec in ("shift_jis_2004", "cp932"):
        try:
            ch.encode(codec)
        except UnicodeEncodeError:
            continue
        return True
    return False


def test_clean_set_is_exactly_the_codecs_plus_ideographs() -> None:
    """The decode-built class equals 'encodes in a codec' (minus controls/format/PUA), plus the
    ideograph ranges and U+309A, over the whole BMP."""
    ideographs = charset.CJK_IDEOGRAPHS
    mismatches = []
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        expected = (
            (_encodes(ch) and unicodedata.category(ch) not in {"Cc", "Cf", "Co"})
            or any(lo <= cp <= hi for lo, hi in ideographs)
            or cp == 0x309A
        )
        if is_clean(ch) != expected:
            mismatches.append(f"U+{cp:04X}")
    assert mismatches == []


_ATTRS = st.dictionaries(st.sampled_from(["alt", "iso", "asGiven", "x"]), st.text(max_size=8))


@settings(database=None, max_examples=300)
@given(value=st.text(), attrs=_ATTRS)
def test_any_text_gives_a_list(value: str, attrs: dict[str, str]) -> None:
    result = text(value, attrs)
    assert isinstance(result, list)
    assert (result == []) or not is_clean(value + "".join(attrs.values()))
