"""Option values that the console also takes, checked by the console's rules: a refused value
is a coded usage error (exit 2) naming the option, never a traceback."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import typer

from bus import wareki
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.reasons import ReasonRefused, stated_reason

#: The days an option can name: their first and last instants in JST must exist in UTC too.
FIRST_DAY, LAST_DAY = date(1, 1, 2), date(9999, 12, 30)


def usage_error(finding: Finding, option: str) -> typer.BadParameter:
    message = f"{finding.code} {finding.message_ja} / {finding.message_en}"
    return typer.BadParameter(message, param_hint=f"'{option}'")


def reason(value: str | None) -> str | None:
    """Callback of a ``--reason`` option: the console's rule (bus/reasons.py), RK-CON002."""
    if value is None:
        return None
    try:
        return stated_reason(value)
    except ReasonRefused as refused:
        raise usage_error(refused.finding, "--reason") from None


def moment(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    """An ISO date or date-time, or a day as the console reads it (令和8年11月26日, R08.11.26).
    Without a zone it is Japan time (JST) whatever the machine's zone, as in the console. A day
    alone is its first instant, or with ``end`` its last (``--to 令和8年11月26日`` takes in the
    whole day, as the console's 期間 does). RK-CON004 when unreadable, RK-CON011 for a 和暦 date
    outside its era (平成32年1月1日)."""
    if value is None:
        return None
    written = wareki.parse(value.strip())
    if written is None:
        try:
            parsed = datetime.fromisoformat(value)
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=wareki.JST)
            parsed.astimezone(UTC)  # the store compares in UTC: 0001-01-01T00:00+09:00 has none
        except (ValueError, OverflowError):
            raise _unreadable(value, option) from None
        return parsed
    outside = wareki.outside_era(written)
    if outside is not None:  # 平成32年1月1日: refused as the mapping and the domain rules do
        finding = make_finding("RK-CON011", path=option, actual=value[:40], expected=outside)
        raise usage_error(finding, option)
    day = wareki.to_gregorian(written)
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise _unreadable(value, option)
    return datetime.combine(day, time.max if end else time(), wareki.JST)


def _unreadable(value: str, option: str) -> typer.BadParameter:
    return usage_error(make_finding("RK-CON004", path=option, actual=value[:40]), option)
