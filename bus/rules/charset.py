"""The character repertoire of administrative text (DESIGN §3).

Allowed: JIS X 0213 (Python's ``shift_jis_2004`` codec), the CP932 repertoire (髙 ① ～),
every CJK unified ideograph (URO, extensions A–I) and CJK compatibility ideograph (文字情報基盤/MJ
characters), variation selectors (IVS) right after a base character, and private-use 外字
only in an element with an ``alt`` attribute (代替文字). Control characters (even TAB/LF),
format characters, unassigned code points and emoji are refused.

The allowed set is built once at import by *decoding* every one- and two-byte sequence of the
two codecs (~20 ms; a loop encoding each BMP character costs ~160 ms) and compiled into one
regex class, so a clean string costs one ``search``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Literal

from bus.rules.violation import RuleViolation

_CODECS = ("shift_jis_2004", "cp932")
_LEAD_BYTES = (*range(0x81, 0xA0), *range(0xE0, 0xFD))
_TRAIL_BYTES = (*range(0x40, 0x7F), *range(0x80, 0xFD))
# Categories never allowed even when a codec maps them: controls, format characters (e.g. the
# soft hyphen in JIS X 0213), surrogates, private use (cp932 maps its user area to PUA) and
# unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})

CJK_IDEOGRAPHS: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs (URO)
    (0xF900, 0xFA6D),  # compatibility ideographs
    (0xFA70, 0xFAD9),
    (0x20000, 0x2A6DF),  # extension B
    (0x2A700, 0x2B739),  # C
    (0x2B740, 0x2B81D),  # D
    (0x2B820, 0x2CEA1),  # E
    (0x2CEB0, 0x2EBE0),  # F
    (0x2EBF0, 0x2EE5D),  # I
    (0x2F800, 0x2FA1D),  # compatibility ideographs supplement
    (0x30000, 0x3134A),  # G
    (0x31350, 0x323AF),  # H
)
VARIATION_SELECTORS: tuple[tuple[int, int], ...] = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
PRIVATE_USE: tuple[tuple[int, int], ...] = (
    (0xE000, 0xF8FF),
    (0xF0000, 0xFFFFD),
    (0x100000, 0x10FFFD),
)

_MAX_REPORTED = 10  # distinct refused characters reported per value


def _codec_repertoire() -> set[int]:
    # errors="replace": an invalid pair yields U+FFFD (dropped) plus at most a character a
    # single-byte decode already found. Some JIS X 0213 characters decode to base + combining
    # mark (か゚ = U+304B U+309A); the mark is then in the repertoire though it does not encode
    # alone.
    found: set[int] = set()
    for codec in _CODECS:
        for single in range(0x100):
            found.update(map(ord, bytes((single,)).decode(codec, "replace")))
        for lead in _LEAD_BYTES:
            for trail in _TRAIL_BYTES:
                found.update(map(ord, bytes((lead, trail)).decode(codec, "replace")))
    found.discard(0xFFFD)
    return {cp for cp in found if unicodedata.category(chr(cp)) not in _REFUSED_CATEGORIES}


def _ranges(
    code_points: Iterable[int], extra: Iterable[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """Sorted, merged ``(first, last)`` ranges of ``code_points`` plus the ``extra`` ranges."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted([*((cp, cp) for cp in code_points), *extra]):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        for lo, hi in ranges
    )


def _in(ranges: tuple[tuple[int, int], ...], cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


@cache
def suspect(*, layout: bool = False) -> re.Pattern[str]:
    """The first character outside the plain repertoire (PUA and selectors included: they
    depend on context, so a string holding one takes the slow path). With ``layout``, TAB, LF
    and CR pass: for a whole document's text, where line breaks and indentation sit between
    elements (a control character inside a free-text value is refused by the XSD's patterns).
    Built on first use (~35 ms: every Shift_JIS pair decoded), not by each command that imports
    the rules; a :class:`~bus.validation.validator.Validator` builds both as it is made."""
    passing = "\t\n\r" if layout else ""
    return re.compile(f"[^{passing}{_base_class()}]")


@cache
def _base_class() -> str:
    return _class(_ranges(_codec_repertoire(), CJK_IDEOGRAPHS))


def is_clean_layout(text: str) -> bool:
    """:func:`is_clean`, but TAB, LF and CR pass (layout between elements)."""
    return suspect(layout=True).search(text) is None


def is_clean(text: str) -> bool:
    """True when every character is in the plain repertoire (no PUA, selector or refused
    character): then :func:`check_text` has nothing to say. One regex search."""
    return suspect().search(text) is None


PrivateUse = Literal["allowed", "needs_alt", "refused"]


def check_text(text: str, *, private_use: PrivateUse = "needs_alt") -> list[RuleViolation]:
    """Violations of the repertoire in ``text``: RK-DOM020 per distinct refused character
    (``actual`` = ``U+XXXX``), RK-DOM022 once for a variation selector without a base character
    and, for 外字 (PUA): nothing when ``allowed``, RK-DOM021 once when ``needs_alt`` (the element
    lacks ``alt``), RK-DOM020 when ``refused`` (inside ``alt`` or another attribute)."""
    refused: dict[str, None] = {}
    pua_without_alt = stray_selector = False
    for match in suspect().finditer(text):  # only the suspect characters are visited
        cp, at = ord(match.group()), match.start()
        if _in(VARIATION_SELECTORS, cp):
            # Any character but another selector is a base here: an allowed one, 外字, or a
            # refused one (❤ + U+FE0F is one error, not two).
            stray_selector = (
                stray_selector or at == 0 or _in(VARIATION_SELECTORS, ord(text[at - 1]))
            )
        elif _in(PRIVATE_USE, cp) and private_use != "refused":
            pua_without_alt = pua_without_alt or private_use == "needs_alt"
        else:
            refused.setdefault(f"U+{cp:04X}")
    violations = [RuleViolation("RK-DOM020", {"actual": u}) for u in list(refused)[:_MAX_REPORTED]]
    if pua_without_alt:
        violations.append(RuleViolation("RK-DOM021", {}))
    if stray_selector:
        violations.append(RuleViolation("RK-DOM022", {}))
    return violations


def text(value: str, attrs: Mapping[str, str]) -> list[RuleViolation]:
    """Rule ``text``: the element's text and its attribute values are in the repertoire.

    外字 (PUA) are allowed in the text only when ``alt`` holds a non-empty 代替文字; ``alt`` and
    every other attribute must be in the repertoire without PUA."""
    alt = attrs.get("alt")
    has_alt = alt is not None and alt.strip() != ""
    violations = check_text(value, private_use="allowed" if has_alt else "needs_alt")
    for attribute in attrs.values():
        for violation in check_text(attribute, private_use="refused"):
            if violation not in violations:
                violations.append(violation)
    return violations
