"""The value operations of a field entry, each compiled once into a plain function.

Operations run in a fixed order (documented in docs/mapping-guide.md): extract → split →
trim → gaiji (outbound) → kana → width → codes → lookup → function → pad, then gaiji
(inbound) and date. Each is ``str -> str`` except the last two, which may give a value with
attributes (``alt``; a ResidentDate's ``iso``/``asGiven``).

Some carry an :class:`Inline`: the same operation as statements the code generator writes
into the section function in place of the call (:mod:`bus.mapping.codegen`), e.g. ``trim`` as
the ``str.strip`` it is, the 外字 step only for a value holding a private-use character, a
code table as its ``dict.get``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, NoReturn

from bus import era as era_table
from bus import wareki
from bus.mapping import text as textops
from bus.mapping.dates import calendar_day, iso_day
from bus.mapping.hooks import MappingFunction
from bus.mapping.tables import GaijiEntry
from bus.mapping.values import FieldFailure, Text, Value

Op = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Inline:
    """An operation as statements on ``value`` (a ``str``), one a line: ``code`` has a ``{}``
    for each of ``bound``, which the generated code holds as globals (never as text). They
    may use the local name ``found``; a failure raises as the operation does."""

    code: str
    bound: tuple[Any, ...]


def inlined(run: Callable[[Any], Any], code: str, *bound: Any) -> Callable[[Any], Any]:
    """``run`` with its inline form attached (``run.inline``): the two must agree."""
    run.inline = Inline(code, bound)  # type: ignore[attr-defined]
    return run


#: The written forms a date can be given in on the way out (and its derived inverse).
DATE_FORMS = ("iso", "wareki", "kanji", "era_code", "era_code2", "era_letter", "compact", "slash")
INBOUND_DATES = ("iso", "resident")
_KANJI = "〇一二三四五六七八九"


def extract(pattern: re.Pattern[str]) -> Op:
    def refuse() -> NoReturn:
        raise FieldFailure("RK-MAP011", expected=pattern.pattern)

    def run(value: str) -> str:
        match = pattern.search(value)
        if match is None:
            refuse()
        return match.group(1) or ""

    code = 'found = {}(value)\nif found is None: {}()\nvalue = found.group(1) or ""'
    return inlined(run, code, pattern.search, refuse)


def split(separator: str, index: int, parts: int | None) -> Op:
    maxsplit = -1 if parts is None else parts - 1

    def run(value: str) -> str:
        pieces = value.split(separator, maxsplit)
        return pieces[index] if index < len(pieces) else ""

    return run


_STRIP = {"left": "lstrip", "right": "rstrip", "both": "strip"}


def trim(side: str) -> Op:
    def run(value: str) -> str:
        return textops.strip_spaces(value, side)

    return inlined(run, f"value = value.{_STRIP[side]}({{}})", textops.SPACES)


def kana() -> Op:
    convert = textops.to_katakana

    def run(value: str) -> str:
        return convert(value)

    # text already in the standard's form (most kana fields) is left as it is, with no call
    code = "if {}(value) is None: value = {}(value)"
    return inlined(run, code, textops.STANDARD_KANA.fullmatch, convert)


def width(kind: str) -> Op:
    if kind == "full":
        return textops.to_full_width

    def half(value: str) -> str:
        return textops.to_half_width(value)

    # ASCII text is already half-width: no call at all
    return inlined(half, "if not value.isascii(): value = {}(value)", textops.to_half_width)


def codes(table: dict[str, str], name: str, unknown: str, fallback: str | None) -> Op:
    def missing(value: str) -> str:
        if unknown == "pass":
            return value
        if unknown == "default" and fallback is not None:
            return fallback
        raise FieldFailure("RK-MAP003", expected=name, value=value)

    def run(value: str) -> str:
        found = table.get(value)
        return missing(value) if found is None else found

    code = "found = {}(value)\nvalue = {}(value) if found is None else found"
    return inlined(run, code, table.get, missing)


def lookup(rows: dict[str, dict[str, str]], column: str, name: str) -> Op:
    def run(value: str) -> str:
        row = rows.get(value)
        if row is None:
            raise FieldFailure("RK-MAP003", expected=name, value=value)
        return row.get(column) or ""

    return run


def function(name: str, hook: MappingFunction) -> Op:
    def run(value: str) -> str:
        try:
            result = hook(value)
        except Exception:  # an escape hatch must not crash the translation
            raise FieldFailure("RK-MAP008", expected=name) from None
        if not isinstance(result, str):
            raise FieldFailure("RK-MAP008", expected=name)
        return result

    return run


def pad(length: int, char: str, side: str) -> Op:
    if side == "left":
        return lambda value: value.rjust(length, char)
    return lambda value: value.ljust(length, char)


_PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U0010ffff]")


def alt_for_private_use(text: str, alt: str | None) -> str:
    """``text`` read from the standard document for a form without ``alt``: a PUA code point
    means something only in the sending system, so each one becomes the character at its
    position in ``alt`` (same length), else the whole ``alt`` replaces the text; with no
    ``alt`` (ingest flags that, RK-DOM021) the text stays as it is."""
    if not alt or text.isprintable() or _PRIVATE_USE.search(text) is None:
        return text  # nearly always: isprintable is False for every PUA character
    if len(alt) != len(text):
        return alt
    return "".join(alt[index] if _PRIVATE_USE.match(ch) else ch for index, ch in enumerate(text))


def gaiji_in(
    table: dict[str, GaijiEntry], name: str, unknown: str | None = None
) -> Callable[[str], Value]:
    """Vendor 外字 → the MJ/IVS character; one with no such character stays a PUA character
    and the value gets an ``alt`` (代替文字) attribute, as the standard requires. A PUA
    character not in the table is RK-MAP010, or with ``unknown`` (e.g. 〓, ゲタ) kept with
    that 代替文字."""

    def run(value: str) -> Value:
        # nearly always: no private-use character. isprintable (C, no regex) is True only
        # when there is none (they are category Co, or Cn); the scan decides otherwise
        if value.isprintable() or _PRIVATE_USE.search(value) is None:
            return value
        return convert(value)

    def convert(value: str) -> Value:
        out, alt, needs_alt = [], [], False
        for ch in value:
            code = ord(ch)
            if 0xE000 <= code <= 0xF8FF or code >= 0xF0000:
                entry = table.get(ch)
                if entry is None:
                    if unknown is None:
                        raise FieldFailure("RK-MAP010", expected=name, actual=f"U+{code:04X}")
                    out.append(ch)
                    alt.append(unknown)
                    needs_alt = True
                elif entry.char:
                    out.append(entry.char)
                    alt.append(entry.char)
                else:
                    out.append(ch)
                    alt.append(entry.alt)
                    needs_alt = True
            else:
                out.append(ch)
                alt.append(ch)
        text = "".join(out)
        return Text(text, (("alt", "".join(alt)),)) if needs_alt else text

    scan = _PRIVATE_USE.search
    code = "if not value.isprintable() and {}(value) is not None: value = {}(value)"
    return inlined(run, code, scan, convert)


def share() -> Op:
    """持分 as ``numerator/denominator`` (２分の１ → 1/2, 持分３分の２ → 2/3, 1／2 → 1/2);
    anything else (3/2, 半分) is RK-MAP011."""

    read = textops.share

    def refuse() -> NoReturn:
        raise FieldFailure("RK-MAP011", expected="持分（n分のm / m/n）")

    def run(value: str) -> str:
        written = read(value)
        if written is None:
            refuse()
        return written

    return inlined(run, "value = {}(value)\nif value is None: {}()", read, refuse)


def gaiji_out(table: dict[str, GaijiEntry]) -> Op:
    """The MJ/IVS characters of the table back to the vendor's PUA code points (longest
    first: a base character with its variation selector before the bare one)."""
    reverse = sorted(((e.char, e.pua) for e in table.values() if e.char), key=lambda p: -len(p[0]))
    if not reverse:
        return lambda value: value
    pattern = re.compile("|".join(re.escape(char) for char, _ in reverse))
    mapping = dict(reverse)
    return lambda value: pattern.sub(lambda m: mapping[m.group(0)], value)


# --- dates ---------------------------------------------------------------------------------


def date_in(kind: str) -> Callable[[Value], Value]:
    """``iso``: any written form → ISO (not a calendar day → RK-MAP004); ``resident``: a
    ResidentDate keeping the text as given, with ``iso`` when it names a calendar day and
    ``asGiven="true"`` when it does not (不詳, 昭和20年頃, 平成5年2月29日)."""

    if kind == "iso":

        def to_iso(value: Value) -> Value:
            text = value.text if isinstance(value, Text) else value
            iso = iso_day(text)
            if iso is None:
                raise FieldFailure("RK-MAP004", value=text)
            return iso

        to_iso.reads_iso = iso_day  # type: ignore[attr-defined]  # codegen inlines the call
        return to_iso

    def resident(value: Value) -> Value:
        text = value.text if isinstance(value, Text) else value
        iso = iso_day(text)
        if iso is None:
            return Text(text, (("asGiven", "true"),))
        return Text(text, (("iso", iso),))

    return resident


def _kanji_number(number: int) -> str:
    if number < 10:
        return _KANJI[number]
    tens, units = divmod(number, 10)
    return ("" if tens == 1 else _KANJI[tens]) + "十" + (_KANJI[units] if units else "")


def format_date(day: date, form: str) -> str:
    if form == "iso":
        return day.isoformat()
    if form == "compact":
        return day.strftime("%Y%m%d")
    if form == "slash":
        return day.strftime("%Y/%m/%d")
    written = wareki.from_gregorian(day)
    if written is None or written.era is None or written.era_year is None:
        raise FieldFailure("RK-MAP004", value=day.isoformat())  # before 明治
    era = era_table.lookup(written.era)
    assert era is not None
    year = written.era_year
    if form == "wareki":
        return wareki.format_wareki(written)
    if form == "kanji":
        number = "元" if year == 1 else _kanji_number(year)
        return f"{era.name}{number}年{_kanji_number(day.month)}月{_kanji_number(day.day)}日"
    if form == "era_letter":
        return f"{era.letter}{year:02d}.{day.month:02d}.{day.day:02d}"
    code = era.code if form == "era_code" else era.code.rjust(2, "0")
    return f"{code}{year:02d}{day.month:02d}{day.day:02d}"


def date_out(form: str) -> Callable[[Value], Value]:
    """ISO (or a ResidentDate's ``iso``) → the system's written form. A ResidentDate kept as
    given (no ``iso``) is written as given."""

    def run(value: Value) -> Value:
        if isinstance(value, Text):
            iso = value.attr("iso")
            if iso is None:
                return value.text
            text = iso
        else:
            text = value
        day = calendar_day(text)
        if day is None:
            raise FieldFailure("RK-MAP004", value=text)
        return format_date(day, form)

    return run
