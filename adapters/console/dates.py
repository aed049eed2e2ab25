"""Dates as staff read and type them: 和暦 first, 西暦 alongside, in Japan time (JST)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from bus import wareki
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.wareki import JST


def _wareki_day(day: date) -> str:
    written = wareki.from_gregorian(day)
    return wareki.format_wareki(written) if written is not None else day.isoformat()


def display(moment: datetime | None, lang: str) -> str:
    """``令和8年11月26日 20:31（2026-11-26 20:31 JST）``; English puts 西暦 first."""
    if moment is None:
        return "—"
    local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(JST)
    western = local.strftime("%Y-%m-%d %H:%M:%S JST")
    japanese = f"{_wareki_day(local.date())} {local:%H:%M:%S}"
    return f"{western} ({japanese})" if lang == "en" else f"{japanese}（{western}）"


class DateRefused(ValueError):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


#: The days a search can name: a search runs from a day's first instant in JST to the next
#: day's, both of which must exist as datetimes (0001-01-01 and 9999-12-31 do not).
FIRST_DAY, LAST_DAY = date(1, 1, 2), date(9999, 12, 30)


def parse_day(text: str) -> date | None:
    """A day typed as 和暦 or 西暦 (令和8年11月26日, R08.11.26, 2026-11-26); None when blank."""
    text = text.strip()
    if not text:
        return None
    written = wareki.parse(text)
    outside = wareki.outside_era(written) if written is not None else None
    if outside is not None:  # 平成32年1月1日: refused as the mapping and the domain rules do
        raise DateRefused(
            make_finding("RK-CON011", path="/date", actual=text[:40], expected=outside)
        )
    day = wareki.to_gregorian(written) if written is not None else None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise DateRefused(make_finding("RK-CON004", path="/date", actual=text[:40]))
    return day


def day_start(day: date) -> datetime:
    """The first instant of a JST calendar day, in UTC."""
    return datetime.combine(day, time(), JST).astimezone(UTC)
