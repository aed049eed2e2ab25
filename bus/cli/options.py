"""Option values that the console also takes, checked by the console's rules: a refused value
is a coded usage error (exit 2) naming the option, never a traceback."""

from __future__ import annotations

from datetime import date, datetime, time

import typer

from bus import wareki
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.reasons import ReasonRefused, stated_reason


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


def moment(value: str | None, option: str) -> datetime | None:
    """An ISO date or date-time, or a day as the console reads it (令和8年11月26日, R08.11.26);
    without a zone it is the operator's local time. RK-CON004 when unreadable."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = datetime.combine(_written_day(value, option), time())
    return parsed if parsed.tzinfo else parsed.astimezone()


def _written_day(value: str, option: str) -> date:
    written = wareki.parse(value.strip())
    day = wareki.to_gregorian(written) if written is not None else None
    if day is None:
        finding = make_finding("RK-CON004", path=option, actual=value[:40])
        raise usage_error(finding, option)
    return day
