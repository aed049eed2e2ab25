"""What an operator or a link may type into the console: no control characters and no
text-direction controls, in any query parameter, path segment or form field (RK-CON010).

None of them has a use in the console's fields, and each does harm further on: PostgreSQL
refuses a NUL in text (the request failed with a 500 whose logged SQL parameters held what
was typed, a searched 宛名番号 among them); a terminal escape in a reason reaches whoever
reads the audit trail in a terminal; a right-to-left override makes a reason shown in the
audit read as other words. Tab, line feed and carriage return are whitespace, which the
fields that keep text normalise (bus/reasons.py, which holds the rule: a CLI reason
obeys it too).

Also the pace typed where the console paces deliveries (the bulk redelivery of dead letters,
the resume of a paused destination): read and refused alike (RK-CON007), and how long it
takes said alike."""

from __future__ import annotations

import math
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


#: A pace's bounds, as ``renkei dlq redeliver --per-second`` and ``renkei destinations resume
#: --per-second`` take it.
PER_SECOND_MIN, PER_SECOND_MAX = 0.01, 10_000.0


def per_second(text: str) -> float | None:
    """The pace typed (half- or full-width digits, a decimal point); None when blank or not
    a number of :data:`PER_SECOND_MIN` to :data:`PER_SECOND_MAX`."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and PER_SECOND_MIN <= value <= PER_SECOND_MAX else None


def refused_per_second(text: str, path: str = "/per_second") -> Finding | None:
    """RK-CON007 for a pace typed that is no number the CLI takes (None: blank or a pace)."""
    if not text.strip() or per_second(text) is not None:
        return None
    return make_finding(
        "RK-CON007",
        path=path,
        name_ja="毎秒の件数",
        actual=text.strip()[:40],
        expected=f"{PER_SECOND_MIN:g}〜{PER_SECOND_MAX:g}",
    )


def duration(count: int, per_second: float) -> tuple[str, str]:
    """How long ``count`` take at ``per_second``, as the CLI says it (minutes from one):
    (the words' key, the number)."""
    seconds = count / per_second
    if seconds >= 60:
        return "dead_all_minutes", f"{seconds / 60:.0f}"
    return "dead_all_seconds", f"{seconds:.0f}"
