"""What an operator or a link may type into the console: no control characters and no
text-direction controls, in any query parameter, path segment or form field (RK-CON010).

None of them has a use in the console's fields, and each does harm further on: PostgreSQL
refuses a NUL in text (the request failed with a 500 whose logged SQL parameters held what
was typed, a searched 宛名番号 among them); a terminal escape in a reason reaches whoever
reads the audit trail in a terminal; a right-to-left override makes a reason shown in the
audit read as other words. Tab, line feed and carriage return are whitespace, which the
fields that keep text normalise (bus/reasons.py)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from bus.errors import make_finding
from bus.pipeline import Finding

_WHITESPACE = frozenset("\t\n\r")
#: Unicode's explicit direction embeddings, overrides and isolates (UAX #9) and the marks.
_DIRECTION = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unusable(text: str) -> bool:
    """Whether ``text`` holds a control (C0, DEL, C1) or a text-direction character."""
    return any(
        (unicodedata.category(char) == "Cc" and char not in _WHITESPACE) or char in _DIRECTION
        for char in text
    )


def refused_field(fields: Iterable[tuple[str, str]]) -> Finding | None:
    """RK-CON010 naming the first field whose value is unusable (never the value: it may be a
    宛名番号)."""
    for name, value in fields:
        if unusable(name) or unusable(value):
            label = "?" if unusable(name) else name[:40]
            return make_finding("RK-CON010", path=f"/{label}", actual=label)
    return None
