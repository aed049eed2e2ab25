"""Rule ``date_birth`` for ``std:ResidentDate`` (生年月日, 住民となった年月日, 住所を定めた年月日…).

The element holds the date as written, an optional ``iso`` date and ``asGiven`` (keep as
given). The 住民記録システム標準仕様書 requires such dates to survive when they are not calendar
dates (2/29 in a non-leap year) or unknown (年月日不詳, 令和○年頃), so those pass with
``asGiven``. A 和暦 date outside its era is an error even with ``asGiven``; the change day in
the old era (明治45年7月30日, 大正15年12月25日) is a valid record.
"""

from __future__ import annotations

from collections.abc import Mapping

from bus import wareki
from bus.rules.violation import RuleViolation

_TRUE = frozenset({"true", "1"})


def date_birth(value: str, attrs: Mapping[str, str]) -> list[RuleViolation]:
    as_given = attrs.get("asGiven", "").strip() in _TRUE
    iso = attrs.get("iso")
    written = wareki.parse(value)
    violations: list[RuleViolation] = []
    if written is not None and not wareki.in_era(written):
        violations.append(RuleViolation("RK-DOM010", {"actual": value}))
    day = wareki.to_gregorian(written) if written is not None else None
    if day is None:
        if not as_given:
            code = "RK-DOM011"
            if written is not None and wareki.is_structural(written):
                code = "RK-DOM012"  # 2/30, 4/31, 2/29 of a common year, lunisolar 明治 dates
            violations.append(RuleViolation(code, {}))
        if iso is not None:  # an ISO date cannot stand for a day the calendar does not have
            violations.append(RuleViolation("RK-DOM013", {"expected": value, "actual": iso}))
    elif iso is not None and iso != day.isoformat():
        violations.append(RuleViolation("RK-DOM013", {"expected": day.isoformat(), "actual": iso}))
    return violations
