"""Dates as Japanese staff and vendors write them: 和暦 (平成元年1月8日, ㍻31年4月26日, R06.04.03,
令和六年四月一日, 4010108) and 西暦 (2024-04-08, 2024/04/08, 20240408, 2024年4月8日).

:func:`parse` only reads the text; it does not check the calendar, so 令和5年2月29日 and
平成32年1月1日 parse and the caller decides (:func:`to_gregorian`, :func:`in_era`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta, timezone
from functools import cache

from bus import era as era_table

#: Japan time (UTC+9, no DST): the zone staff read and type dates in, whatever the server's.
JST = timezone(timedelta(hours=9), "JST")

_MAX_LENGTH = 40  # longer text is not a date; keeps the regexes cheap on hostile input
_KANJI_DIGITS = {ch: value for value, ch in enumerate("〇一二三四五六七八九")}
_KNUM = "[〇一二三四五六七八九十]{1,4}"
_MD = rf"(?:[0-9]{{1,2}}|{_KNUM})"
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class WarekiDate:
    """A written date, calendar-unchecked. ``year`` is the Gregorian year (for a 和暦 date,
    the era's first year + ``era_year`` - 1); ``era`` is the era's name (平成) or None."""

    era: str | None
    era_year: int | None
    year: int
    month: int
    day: int


@cache
def _patterns() -> tuple[re.Pattern[str], ...]:
    table = era_table.eras()
    spelled = "|".join(re.escape(token) for token in era_table.spellings(table))
    letters = "".join(re.escape(era.letter + era.letter.lower()) for era in table)
    codes = "".join(re.escape(era.code) for era in table if len(era.code) == 1)
    era_year = rf"(?P<y>元|[0-9]{{1,3}}|{_KNUM})"
    western = "(?:西暦)?(?P<y>[0-9]{4}|[〇一二三四五六七八九]{4})"
    tail = rf"(?:年(?P<m>{_MD})月(?P<d>{_MD})日?|(?P<sep>[./-])(?P<m2>{_MD})(?P=sep)(?P<d2>{_MD}))"
    sources = [
        rf"(?P<era>{spelled}){era_year}{tail}",
        rf"(?P<era>[{letters}])(?P<y>[0-9]{{2}})(?P<m>[0-9]{{2}})(?P<d>[0-9]{{2}})",  # R060403
        rf"{western}{tail}",
    ]
    if codes:  # 2-digit 年号コード + YYMMDD (05060401 = 令和6年4月1日); no 西暦 year starts with 0
        sources.append(rf"0(?P<era>[{codes}])(?P<y>[0-9]{{2}})(?P<m>[0-9]{{2}})(?P<d>[0-9]{{2}})")
    sources += [
        r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})",  # 20240408
    ]
    if codes:  # 年号コード + YYMMDD, as in 住基 fixed-width files: 4010108 = 平成元年1月8日
        sources.append(rf"(?P<era>[{codes}])(?P<y>[0-9]{{2}})(?P<m>[0-9]{{2}})(?P<d>[0-9]{{2}})")
    return tuple(re.compile(source) for source in sources)


@cache
def _ligatures() -> dict[int, str]:
    return {ord(era.ligature): era.name for era in era_table.eras() if len(era.ligature) == 1}


def _number(text: str) -> int | None:
    """ASCII digits, 元 (= 1), kanji numerals 十/二十三 or positional 二〇二四."""
    if text.isascii():
        return int(text)
    if text == "元":
        return 1
    if "十" not in text:
        value = 0
        for ch in text:
            value = value * 10 + _KANJI_DIGITS[ch]
        return value
    tens, _, units = text.partition("十")
    if len(tens) > 1 or len(units) > 1 or "十" in units or "〇" in (tens, units):
        return None
    return (_KANJI_DIGITS[tens] if tens else 1) * 10 + (_KANJI_DIGITS[units] if units else 0)


for _built in (_patterns, _ligatures):
    era_table.on_reload(_built.cache_clear)


def normalise(text: str) -> str:
    """Era ligatures spelled out, full-width digits/letters made ASCII (NFKC), spaces removed."""
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", text.translate(_ligatures())))


@cache
def _canonical_form() -> re.Pattern[str]:
    """The form registries write most (昭和45年3月12日, 平成元年1月8日), read as is."""
    names = "|".join(re.escape(era.name) for era in era_table.eras())
    return re.compile(
        rf"(?P<era>{names})(?P<y>元|[0-9]{{1,2}})年(?P<m>[0-9]{{1,2}})月(?P<d>[0-9]{{1,2}})日"
    )


era_table.on_reload(_canonical_form.cache_clear)


def parse(text: str) -> WarekiDate | None:
    """The written date in ``text``, or None when it is not a complete date (不詳, 昭和20年頃)."""
    if len(text) > _MAX_LENGTH:
        return None
    match = _canonical_form().fullmatch(text)
    if match is not None:
        return _from_match(match)
    written = normalise(text)
    for pattern in _patterns():
        match = pattern.fullmatch(written)
        if match is not None:
            return _from_match(match)
    return None


def _from_match(match: re.Match[str]) -> WarekiDate | None:
    groups = {name: value for name, value in match.groupdict().items() if value is not None}
    year = _number(groups["y"])
    month = _number(groups.get("m") or groups["m2"])
    day = _number(groups.get("d") or groups["d2"])
    if year is None or month is None or day is None:
        return None
    token = groups.get("era")
    if token is None:
        return WarekiDate(None, None, year, month, day)
    era = era_table.lookup(token)
    if era is None:  # pragma: no cover - the pattern only holds the table's spellings
        return None
    return WarekiDate(era.name, year, era.start.year + year - 1, month, day)


def is_structural(written: WarekiDate) -> bool:
    """Month 1–12 and day 1–31: possible in some month (4/31 and 2/30 are, 13/1 is not)."""
    return 1 <= written.month <= 12 and 1 <= written.day <= 31


def to_gregorian(written: WarekiDate) -> date | None:
    """The Gregorian day, or None when the text names no calendar day.

    A 和暦 date before 明治6年 (Japan's Gregorian reform) is lunisolar: no arithmetic
    conversion exists, so it is None too (callers keep such dates as given)."""
    if not is_structural(written):
        return None
    try:
        day = date(written.year, written.month, written.day)
    except ValueError:
        return None
    if written.era is not None and day < era_table.GREGORIAN_ADOPTION:
        return None
    return day


def in_era(written: WarekiDate) -> bool:
    """Whether a 和暦 date lies in its era: from its start to the next era's start day
    inclusive (the change day is written in either era). A 西暦 date is always in range."""
    if written.era is None or written.era_year is None:
        return True
    era = era_table.lookup(written.era)
    if era is None or written.era_year < 1:
        return False
    key = (written.year, written.month, written.day)
    if key < (era.start.year, *era.start_written):
        return False
    following = era_table.next_era(era)
    return following is None or key <= (
        following.start.year,
        following.start.month,
        following.start.day,
    )


def from_gregorian(day: date) -> WarekiDate | None:
    """The 和暦 date of a Gregorian day (the new era on a change day); None before 明治6年."""
    era = era_table.era_on(day)
    if era is None or day < era_table.GREGORIAN_ADOPTION:
        return None
    return WarekiDate(era.name, day.year - era.start.year + 1, day.year, day.month, day.day)


def outside_era(written: WarekiDate) -> str | None:
    """For a 和暦 date that names a calendar day outside its era (平成32年1月1日, 令和10年 after
    the next 改元): ``2020-01-01 = 令和2年1月1日``, what the day is, for a message; else None."""
    day = to_gregorian(written)
    if day is None or in_era(written):
        return None
    own = from_gregorian(day)
    return f"{day.isoformat()} = {format_wareki(own)}" if own else day.isoformat()


def format_wareki(written: WarekiDate) -> str:
    """``平成元年1月8日`` style text (ISO for a 西暦 date)."""
    if written.era is None or written.era_year is None:
        return f"{written.year:04d}-{written.month:02d}-{written.day:02d}"
    year = "元" if written.era_year == 1 else str(written.era_year)
    return f"{written.era}{year}年{written.month}月{written.day}日"
