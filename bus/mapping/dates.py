"""Reading a written date to its calendar day, fast for the forms systems write most.

:func:`general_calendar_day` is the reference: :func:`bus.wareki.parse` (every form), the
date in its era, Gregorian. :func:`calendar_day` gives the same answer but reads ISO
(2024-04-08) and the registries' 和暦 form (令和6年4月1日) without the general parser;
:func:`iso_day` reads a year, then ``年`` or a separator, then the month and day, through
lookup tables built from the era table (``令和6``, ``R06`` or ``2024`` → the year and the
month-days it holds; ``4月1日`` or, by separator, ``04/08`` → 401 and ``-04-01``), with no
regular expression and no ``date`` object: 令和6年4月1日, R06.04.03, 2024/04/08, 2024-04-08.
(A bounded cache in front of it was measured and dropped: its hits cost as much as the
lookups.) Anything the tables do not hold goes down the next path, so each shortcut only ever
answers for text the slower path reads the same way (tests/test_mapping_fastpaths.py checks
that against the general parser). The other forms (㍻31年4月26日, R060403) take the general
parser, ~15 µs; a batch writes the same few hundred dates over and over, so their answers are
kept in a bounded cache (tests/test_mapping_chains.py).
"""

from __future__ import annotations

import calendar
import re
from datetime import date
from functools import cache

from bus import era as era_table
from bus import wareki
from bus.mapping.memo import short_text_cache

_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: in a leap year
Span = tuple[int, tuple[int, int, int], tuple[int, int, int]]
Year = tuple[str, int, int, bool]  # Gregorian year as text, first and last month-day, leap


def general_calendar_day(text: str) -> date | None:
    """The calendar day by the general parser: any form, in its era, Gregorian."""
    written = wareki.parse(text)
    if written is None or not wareki.in_era(written):
        return None
    return wareki.to_gregorian(written)


@cache
def _spans() -> dict[str, Span]:
    """Each era's first year, first written day and (inclusive) last day as (y, m, d)."""
    table = era_table.eras()
    spans = {}
    for index, era in enumerate(table):
        following = table[index + 1] if index + 1 < len(table) else None
        end = (
            (following.start.year, following.start.month, following.start.day)
            if following
            else (9999, 12, 31)
        )
        spans[era.name] = (era.start.year, (era.start.year, *era.start_written), end)
    return spans


@cache
def _canonical_wareki() -> re.Pattern[str]:
    names = "|".join(re.escape(name) for name in _spans())
    return re.compile(rf"({names})(元|[0-9]{{1,2}})年([0-9]{{1,2}})月([0-9]{{1,2}})日")


def calendar_day(text: str) -> date | None:
    """The calendar day ``text`` names (any form :mod:`bus.wareki` reads), or None."""
    if len(text) == 10 and text[4] == "-" and _ISO.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            return None
    match = _canonical_wareki().fullmatch(text)
    if match is not None:
        first, begin, end = _spans()[match[1]]
        year = first + (1 if match[2] == "元" else int(match[2])) - 1
        key = (year, int(match[3]), int(match[4]))
        if not begin <= key <= end or year < 1873:
            return None
        try:
            return date(*key)
        except ValueError:
            return None
    return general_calendar_day(text)


MonthDays = dict[str, dict[str, tuple[int, str]]]
SEPARATORS = "/.-"  # between year, month and day, as wareki reads them (the same one twice)


@cache
def _wareki_tables() -> tuple[dict[str, Year], MonthDays]:
    """The year before ``年`` or a separator: ``令和6`` / ``令和06`` / ``令和元`` / ``R06`` /
    ``r6`` → the Gregorian year as text and the month-days (``month * 100 + day``) that year
    of the era holds, for era years 0–99; ``2024`` → the same for a 西暦 year (every day).
    What follows, by ``年`` or separator: ``4月1日`` / ``04月01日`` or ``4/1`` / ``04/01`` →
    (401, "-04-01"), for every day some year has."""
    years: dict[str, Year] = {}
    for era in era_table.eras():
        first_year, begin, end = _spans()[era.name]
        for number in range(100):
            year = first_year + number - 1
            first = begin[1] * 100 + begin[2] if year == begin[0] else 101
            last = end[1] * 100 + end[2] if year == end[0] else 1231
            if year < 1873 or year > end[0] or year < begin[0]:
                first, last = 1, 0  # no day: before the Gregorian calendar or outside the era
            entry = (str(year), first, last, calendar.isleap(year))
            for written in {str(number), f"{number:02d}", *(("元",) if number == 1 else ())}:
                for token in (era.name, era.letter, era.letter.lower()):
                    years[f"{token}{written}"] = entry
    for year in range(1, 10000):  # 西暦: no era to lie in (0000 is no year)
        years[f"{year:04d}"] = (f"{year:04d}", 101, 1231, calendar.isleap(year))
    month_days: MonthDays = {mark: {} for mark in ("年", *SEPARATORS)}
    for month, days in enumerate(_DAYS_IN_MONTH, start=1):
        for day in range(1, days + 1):
            found = (month * 100 + day, f"-{month:02d}-{day:02d}")
            for month_written in {str(month), f"{month:02d}"}:
                for day_written in {str(day), f"{day:02d}"}:
                    month_days["年"][f"{month_written}月{day_written}日"] = found
                    for mark in SEPARATORS:
                        month_days[mark][f"{month_written}{mark}{day_written}"] = found
    global _TABLES
    _TABLES = years, month_days
    return _TABLES


_TABLES: tuple[dict[str, Year], MonthDays] | None = None  # read by iso_day


def iso_day(text: str) -> str | None:
    """The ISO text of the calendar day ``text`` names, or None."""
    year_text, found, month_day = text.partition("年")
    if not found:
        mark = "/" if "/" in text else "." if "." in text else "-"
        year_text, found, month_day = text.partition(mark)
    if found:
        years, month_days = _TABLES or _wareki_tables()
        year = years.get(year_text)
        if year is not None:
            day = month_days[found].get(month_day)
            if day is not None:
                prefix, first, last, leap = year
                number, suffix = day
                if first <= number <= last and (leap or number != 229):
                    return prefix + suffix
                return None
    return _cached_iso(text)


def _iso(text: str) -> str | None:
    day = calendar_day(text)
    return None if day is None else day.isoformat()


# no text over 40 characters is a date; 8,192 answers (~2 MB) hold two decades of days in one
# form: the receipt and cause dates of a large file (the benchmark's 100,000 records: 5,040)
_cached_iso = short_text_cache(maxsize=8192)(_iso)


def _forget_tables() -> None:
    global _TABLES
    _TABLES = None
    for built in (_spans, _canonical_wareki, _wareki_tables, _cached_iso):
        built.cache_clear()


era_table.on_reload(_forget_tables)
