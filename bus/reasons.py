"""The stated reason of an operator action (理由必須), one rule for the console and the CLI:
runs of whitespace become one space, and a blank or over-long reason is refused (RK-CON002).
The reason goes to the audit trail, where an empty one would record nothing."""

from __future__ import annotations

from bus.errors import make_finding
from bus.pipeline import Finding

REASON_CAP = 200  # characters of an action's stated reason


class ReasonRefused(ValueError):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


def stated_reason(text: str) -> str:
    """``text`` with its whitespace normalised; ReasonRefused when blank or too long."""
    reason = " ".join(text.split())
    if not reason or len(reason) > REASON_CAP:
        raise ReasonRefused(make_finding("RK-CON002", path="/reason", limit=REASON_CAP))
    return reason
