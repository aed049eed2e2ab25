"""Normalisation before owner matching (名寄せ): names, kana, addresses, corporations, 持分.

Only what is the *same name written differently* is folded: character width, spaces, kana
forms, variation selectors (an IVS such as 葛󠄀 = 葛 U+E0100 is a glyph of its base character:
住民記録 keeps them, the 法務局's files mostly not) and the variant kanji listed in
``variant_kanji.csv`` (髙→高, 﨑→崎, 齋→斎 …). 斎 and 斉 are different names and stay apart:
the table is data, reviewed by staff, never NFKC.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bus.mapping.text import HALF_WIDTH, to_half_width, to_katakana
from bus.rules.check_digits import corporate_number_valid

VARIANT_TABLE = Path(__file__).with_name("variant_kanji.csv")
# 〜 (WAVE DASH, what Shift_JIS decoders give for 0x8160) and ～ (what CP932 gives) are one sign;
# the hyphens and dashes people type between numbers (‐ ‑ ‒ – — ― − ﹣) are one hyphen
_SIGNS = str.maketrans(
    {"\u301c": "～", **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63", "－")}
)
_SPACE = re.compile(r"[\s\u3000]+")
# variation selectors (VS1–16, IVS VS17–256): dropped, the base character is the name
_SELECTORS = (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0))


@cache
def variant_table(path: Path = VARIANT_TABLE) -> dict[int, str]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {ord(row["variant"]): row["standard"] for row in rows}


def fold_text(text: str) -> str:
    """Width (full-width ASCII → ASCII, half-width kana → full-width), signs, variants and
    variation selectors (dropped)."""
    return _widen_kana(text).translate(_fold_table())


@cache
def _fold_table() -> dict[int, str]:
    """The signs, then the width (:func:`to_half_width`), then the variants, character by
    character, as one table: one pass over the text instead of three; selectors dropped."""
    variants = variant_table()
    table = dict.fromkeys(_SELECTORS, "")
    for code in {*_SIGNS, *HALF_WIDTH, *variants}:  # any other character stays as it is
        folded = to_half_width(chr(code).translate(_SIGNS)).translate(variants)
        if folded != chr(code):
            table[code] = folded
    return table


_HALF_KANA = re.compile(r"[\uff61-\uff9f]+")


def _widen_kana(text: str) -> str:
    if _HALF_KANA.search(text) is None:
        return text
    return _HALF_KANA.sub(lambda m: to_katakana(m.group()), text)


# A change to what name_key, kana_key, address_key or corporation give: bump residents.KEY_VERSION
def name_key(text: str) -> str:
    """A person's name for comparison: folded, without any spaces."""
    return _SPACE.sub("", fold_text(text))


# small kana written large, as older registers (and typewriters) did: キヨウコ for キョウコ
_SMALL_KANA = str.maketrans("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ")


def kana_key(text: str) -> str:
    """A kana name for comparison: katakana, no spaces, small kana as large (キョウコ and the
    old-style キヨウコ are one reading). Safe because kana never decides 一致 alone: that
    needs the kanji name and the address (see ``matching``)."""
    return fold_small_kana(_SPACE.sub("", to_katakana(text)))


def fold_small_kana(key: str) -> str:
    """Small kana → large in a kana key (:func:`kana_key` does it; also applied to keys an
    index stored before it did)."""
    return key.translate(_SMALL_KANA)


# --- addresses ------------------------------------------------------------------------------

# 零 and ○ (a circle typed for 〇: 一○二番地) are 0 too
_KANJI_DIGITS = {c: i for i, c in enumerate("〇一二三四五六七八九")} | {"零": 0, "○": 0}
_KANJI_NUMBER = "〇零○一二三四五六七八九十百千"
_UNIT = r"(?:丁目|番地|番|号|の|-|－)"
_NUMBER_IN_ADDRESS = re.compile(rf"([{_KANJI_NUMBER}]+)(?={_UNIT}|$)")
# the 47 prefectures by name: a pattern such as ".{2,3}県" took 大字国府 or 大字中道 for one,
# and 大字国府12 and 大字中道12 then both became 12; a 郡 never starts with 大字/字 (大字下郡)
_PREFECTURES = (
    "北海道|東京都|京都府|大阪府|(?:青森|岩手|宮城|秋田|山形|福島|茨城|栃木|群馬|埼玉|千葉|神奈川"
    "|新潟|富山|石川|福井|山梨|長野|岐阜|静岡|愛知|三重|滋賀|兵庫|奈良|和歌山|鳥取|島根|岡山|広島"
    "|山口|徳島|香川|愛媛|高知|福岡|佐賀|長崎|熊本|大分|宮崎|鹿児島|沖縄)県"
)
_PREFIX = re.compile(rf"^(?:{_PREFECTURES})?(?:(?!大?字)[^0-9]{{1,4}}?郡)?")
# an address that starts at the 大字/字 or at a 町名 (武雄町大字武雄…, 本町1-2, 中央二丁目…):
# no prefecture, 郡 or town written, so it is read as inside the tenant's town
_LOCAL = re.compile(
    r"^(?:大?字|[^0-9都道府県市区郡町村]{1,5}町(?=大?字|[0-9])"
    r"|[^0-9都道府県市区郡町村]{1,5}?(?:[0-9]+|[〇一二三四五六七八九十]+)丁目)"
)
# ケ, ヶ and が between two kanji of a place name are one particle: 霞ケ関, 霞ヶ関, 霞が関
_PLACE_PARTICLE = re.compile(
    r"(?<=[\u3400-\u9fff\uf900-\ufaff々])[ヶが](?=[\u3400-\u9fff\uf900-\ufaff])"
)
_MARKERS = re.compile(r"大字|(?<![0-9])字(?=[^0-9])")
_SEPARATORS = re.compile(r"(?:丁目|番地|番|号|の|－|‐|ー(?=[0-9])|-)+")


def kanji_to_int(text: str) -> int:
    """漢数字 (positional 一〇二 or with 十百千 二十三) → int."""
    if not any(ch in "十百千" for ch in text):
        return int("".join(str(_KANJI_DIGITS[ch]) for ch in text))
    total, current = 0, 0
    for ch in text:
        if ch in _KANJI_DIGITS:
            current = _KANJI_DIGITS[ch]
        else:
            total += (current or 1) * {"十": 10, "百": 100, "千": 1000}[ch]
            current = 0
    return total + current


def address_key(text: str) -> str:
    """An address for comparison: no prefecture or 郡, no 大字/字, digits for 漢数字 in
    number positions, 丁目/番地/番/号/の as one separator (佐賀県杵島郡大町町大字大町一七二二番地十
    → 大町町大町1722-10)."""
    folded = _SPACE.sub("", fold_text(text))
    folded = _NUMBER_IN_ADDRESS.sub(lambda m: str(kanji_to_int(m.group(1))), folded)
    folded = _PREFIX.sub("", folded, count=1)
    folded = _MARKERS.sub("", folded)
    return fold_place_particles(_SEPARATORS.sub("-", folded).strip("-"))


def fold_place_particles(key: str) -> str:
    """ケ for ヶ and が between two kanji of an address (霞ヶ関, 霞が関 → 霞ケ関). Only in
    addresses: in a person's name they stay as written. :func:`address_key` does it; also
    applied to keys an index stored before it did."""
    return _PLACE_PARTICLE.sub("ケ", key)


def town_address_key(text: str, town_key: str) -> str:
    """:func:`address_key` of an owner's address, read inside the tenant's town
    (``town_key``: :func:`address_key` of its name) when it names no prefecture, 郡 or town
    and starts at the 大字/字 or a 町名: 大字大町1722 in 大町町 → 大町町大町1722. An address
    naming another town (嬉野市…, 杵島郡江北町…) stays in that town."""
    key = address_key(text)
    if town_key and not key.startswith(town_key) and _LOCAL.match(_SPACE.sub("", fold_text(text))):
        return town_key + key
    return key


_OAZA_MARK = "大字"
_SECTION_MARK = "字"  # 字 before the 大字's name, or 小字 after it
_DIGITS = re.compile(r"[0-9]+")


def oaza_key(text: str, town_key: str = "") -> str:
    """The 大字 a 所在 names, to sort and group the list by: what follows the prefecture, 郡
    and the town (``town_key``: :func:`address_key` of its name), written with or without the
    marks 大字 and 字, up to a 小字 (字…) — 武雄市武雄町大字富岡字下町, 武雄市武雄町富岡 →
    武雄町富岡. Width, spaces and 漢数字 are folded as :func:`address_key` folds them, 丁目
    and the like as one separator, and numbers padded so that they sort as numbers (中央2丁目
    before 中央10丁目)."""
    folded = fold_place_particles(_SPACE.sub("", fold_text(text)))
    folded = _NUMBER_IN_ADDRESS.sub(lambda m: str(kanji_to_int(m.group(1))), folded)
    folded = _PREFIX.sub("", folded, count=1)
    if town_key and folded.startswith(town_key):
        folded = folded[len(town_key) :]
    folded = folded.replace(_OAZA_MARK, "").removeprefix(_SECTION_MARK)
    oaza = folded.split(_SECTION_MARK, 1)[0]  # a 小字 after the name is not the 大字
    oaza = _SEPARATORS.sub("-", oaza).strip("-")
    return _DIGITS.sub(lambda m: m.group().zfill(9), oaza)


def lot_key(text: str) -> str:
    """A 地番 or 家屋番号 in numeric order: its numbers, each padded (2 before 10, 5番2 and
    5-2 before 5-10; full-width digits and 漢数字 in number positions read as numbers)."""
    folded = fold_text(text)
    if _HAS_KANJI_NUMBER.search(folded) is not None:
        folded = _NUMBER_IN_ADDRESS.sub(lambda m: str(kanji_to_int(m.group(1))), folded)
    return "-".join(n.zfill(9) for n in _DIGITS.findall(folded))


_HAS_KANJI_NUMBER = re.compile(f"[{_KANJI_NUMBER}]")


# --- corporations ---------------------------------------------------------------------------

_CORPORATE_FORMS = {  # the form and how else it is written (kana: ｶﾌﾞｼｷｶﾞｲｼｬ once widened)
    "株式会社": ("㈱", "(株)", "（株）", "カブシキガイシャ", "カブシキカイシャ"),
    "有限会社": ("㈲", "(有)", "（有）", "ユウゲンガイシャ", "ユウゲンカイシャ"),
    "合同会社": ("(同)", "（同）", "ゴウドウガイシャ", "ゴウドウカイシャ"),
    "合名会社": ("㈴", "(名)", "（名）", "ゴウメイガイシャ", "ゴウメイカイシャ"),
    "合資会社": ("㈾", "(資)", "（資）", "ゴウシガイシャ", "ゴウシカイシャ"),
    "一般社団法人": ("(一社)", "（一社）", "イッパンシャダンホウジン"),
    "一般財団法人": ("(一財)", "（一財）", "イッパンザイダンホウジン"),
    "公益社団法人": ("(公社)", "（公社）"),
    "公益財団法人": ("(公財)", "（公財）"),
    "社会福祉法人": ("(福)", "（福）", "(社福)", "（社福）"),
    "医療法人": ("(医)", "（医）"),  # 医療法人社団… and 医療法人財団… too
    "特定非営利活動法人": ("NPO法人", "(特非)", "（特非）"),
    # after the longer forms that end in them (一般社団法人, 公益財団法人 …)
    "社団法人": ("㈳", "(社)", "（社）"),
    "財団法人": ("㈶", "(財)", "（財）"),
}
_CORPORATE_NUMBER = re.compile(r"(?<![0-9])([0-9]{13})(?![0-9])")
_NUMBER_NOTE = re.compile(r"[（(]?(?:法人番号|会社法人等番号)?[:：]?[0-9\-－]{12,16}[)）]?")


@dataclass(frozen=True, slots=True)
class Corporation:
    key: str  # canonical name with the form spelled out where it was written (前株/後株)
    bare: str  # the name without its form, to find the same company written the other way
    number: str | None  # 法人番号, when the notice carries a valid one
    form: str  # the form spelled out: 株式会社, 社会福祉法人 …


def corporation(text: str) -> Corporation | None:
    """The corporation a right holder's name denotes, or None for a natural person."""
    folded = _SPACE.sub("", fold_text(text))
    numbers = _CORPORATE_NUMBER.findall(folded.replace("-", ""))
    number = next((m for m in numbers if corporate_number_valid(m)), None)
    name = _NUMBER_NOTE.sub("", folded) if number else folded
    for full, abbreviations in _CORPORATE_FORMS.items():
        for abbreviation in abbreviations:
            name = name.replace(to_half_width(abbreviation), full)
        if full in name:
            return Corporation(name, name.replace(full, ""), number, full)
    return None
