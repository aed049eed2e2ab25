"""The stated reason of an operator action (理由必須), one rule for the console and the CLI:
runs of whitespace become one space, and a blank or over-long reason is refused (RK-CON002).
The reason goes to the audit trail, where an empty one would record nothing.

A reason with a control character (NUL, a terminal escape) or a text-direction control is
refused too (RK-CON010, :func:`unusable`): PostgreSQL refuses a NUL in text, an escape reaches
whoever reads the audit trail in a terminal, and a right-to-left override makes the reason
read as other words there."""

from __future__ import annotations

import unicodedata

from bus.errors import make_finding
from bus.pipeline import Finding

REASON_CAP = 200  # characters of an action's stated reason
_WHITESPACE = frozenset("\t\n\r")
#: Unicode's explicit direction embeddings, overrides and isolates (UAX #9) and the marks.
_DIRECTION = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unusable(text: str) -> bool:
    """Whether ``text`` holds a control (C0, DEL, C1) or a text-direction character."""
    return any(
        (unicodedata.category(char) == "Cc" and char not in _WHITESPACE) or char in _DIRECTION
        for char in text
    )


class ReasonRefused(ValueError):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


def stated_reason(text: str) -> str:
    """``text`` with its whitespace normalised; ReasonRefused when blank or too long."""
    if unusable(text):
        raise ReasonRefused(make_finding("RK-CON010", path="/reason", actual="reason"))
    reason = " ".join(text.split())
    if not reason or len(reason) > REASON_CAP:
        raise ReasonRefused(make_finding("RK-CON002", path="/reason", limit=REASON_CAP))
    return reason
