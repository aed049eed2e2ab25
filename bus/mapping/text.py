"""Text normalisation for mapped values: kana (カナ) and character width (全角/半角).

``katakana``: half-width katakana → full-width with their voiced marks combined (ｶﾞ → ガ),
hiragana → katakana, runs of spaces → one full-width space (the standard's kana pattern).
``full``/``half``: digits, Latin letters and ASCII symbols between the two widths; other
characters (kanji, kana) are left alone.

Each runs per field of every record of a batch, so each skips the work for text that needs
none: katakana already in the standard's form, ASCII text made half-width
(tests/test_mapping_chains.py checks them against the character-by-character definitions).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from bus.mapping.memo import short_text_cache

_HALF_KANA = "".join(chr(c) for c in range(0xFF61, 0xFFA0))
SPACES = " \u3000\t"  # what trim removes: half- and full-width spaces, tabs
# full-width katakana (ァ–ヶ, ー) in parts joined by one full-width space: to_katakana's fixed
# points (no half-width kana, no hiragana, no voiced mark to compose, nothing NFC changes)
STANDARD_KANA = re.compile("[\u30a1-\u30f6\u30fc]+(?:\u3000[\u30a1-\u30f6\u30fc]+)*")
# what to_half_width translates, by code point
HALF_WIDTH = {0x3000: " ", **{code: chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)}}


@cache
def _half_kana_table() -> dict[str, str]:
    return {ch: unicodedata.normalize("NFKC", ch) for ch in _HALF_KANA}


_VOICED = {"\u3099": "\u309b", "\u309a": "\u309c"}  # combining → spacing marks, for lookups


def to_katakana(text: str) -> str:
    """Full-width katakana with combined voiced marks; one full-width space between parts."""
    if STANDARD_KANA.fullmatch(text) is not None:  # already so (most kana fields): as it is
        return text
    return _katakana(text)


def _katakana(text: str) -> str:
    table = _half_kana_table()
    widened = "".join(table.get(ch, ch) for ch in text)
    # NFKC of ｶﾞ gives カ + ゛ (spacing) only via the combining form: compose explicitly.
    widened = widened.replace("\u309b", "\u3099").replace("\u309c", "\u309a")
    composed = unicodedata.normalize("NFC", widened)
    out = []
    for ch in composed:
        code = ord(ch)
        if 0x3041 <= code <= 0x3096:  # hiragana → katakana
            ch = chr(code + 0x60)
        elif ch in _VOICED:
            ch = _VOICED[ch]
        out.append(ch)
    return _single_spaces("".join(out))


def _single_spaces(text: str) -> str:
    parts = [part for part in text.replace("\t", " ").replace(" ", "\u3000").split("\u3000")]
    return "\u3000".join(part for part in parts if part)


def to_full_width(text: str) -> str:
    """ASCII digits, letters and symbols → full-width (space → 　)."""
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text
    )


def to_half_width(text: str) -> str:
    """Full-width digits, letters and symbols (！ U+FF01 – ～ U+FF5E) → ASCII, 　 → space;
    kana stay full-width. ASCII text is returned as it is."""
    return text if text.isascii() else text.translate(HALF_WIDTH)


def strip_spaces(text: str, side: str = "both") -> str:
    """Remove half- and full-width spaces (and tabs) at ``side``: both, left, right."""
    if side == "left":
        return text.lstrip(SPACES)
    if side == "right":
        return text.rstrip(SPACES)
    return text.strip(SPACES)


_SHARE = re.compile(r"(?:持分)?([0-9]+)(?:分の|/)([0-9]+)")


@short_text_cache(maxsize=1024)  # a batch repeats a few 持分 (1/2, ２分の１ …)
def share(text: str) -> str | None:
    """持分 as ``numerator/denominator`` (２分の１ → 1/2, 1/2 → 1/2); None when unreadable."""
    folded = "".join(to_half_width(text).replace("／", "/").split())
    match = _SHARE.fullmatch(folded)
    if match is None:
        return None
    first, second = int(match.group(1)), int(match.group(2))
    numerator, denominator = (second, first) if "分の" in folded else (first, second)
    if numerator < 1 or denominator < 1 or numerator > denominator:
        return None
    return f"{numerator}/{denominator}"
