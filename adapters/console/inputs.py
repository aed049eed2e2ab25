"""What an operator or a link may type into the console: no control characters and no
text-direction controls, in any query parameter, path segment or form field (RK-CON010).

None of them has a use in the console's fields, and each does harm further on: PostgreSQL
refuses a NUL in text (the request failed with a 500 whose logged SQL parameters held what
was typed, a searched 宛名番号 among them); a terminal escape in a reason reaches whoever
reads the audit trail in a terminal; a right-to-left override makes a reason shown in the
audit read as other words. Tab, line feed and carriage return are whitespace, which the
fields that keep text normalise (bus/reasons.py, which holds the rule: a CLI reason
obeys it too)."""

from __future__ import annotations

from collections.abc import Iterable

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.reasons import unusable


def refused_field(fields: Iterable[tuple[str, str]]) -> Finding | None:
    """RK-CON010 naming the first field whose value is unusable (never the value: it may be a
    宛名番号)."""
    for name, value in fields:
        if unusable(name) or unusable(value):
            label = "?" if unusable(name) else name[:40]
            return make_finding("RK-CON010", path=f"/{label}", actual=label)
    return None
