"""A cap on the findings one message reports.

Each finding costs work (its path, its messages) and bytes in the answer: a body of a few
hundred kilobytes with a fault in every one of thousands of repeated elements took the batch
lane tens of seconds and came back as a two-megabyte Fault, while every other sender's
notifications waited. The first ``limit`` findings are reported as they are; the rest are
only counted, in one RK-XSD009 finding — an error when any of them was one, so the message's
verdict never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.errors import make_finding
from bus.pipeline import Finding, Severity

MAX_FINDINGS = 100


@dataclass(slots=True)
class FindingBudget:
    limit: int = MAX_FINDINGS
    used: int = 0
    omitted: int = 0
    omitted_error: bool = False

    def admits(self, severity: Severity) -> bool:
        """Whether a finding of ``severity`` is still reported in full; counts it if not."""
        if self.used < self.limit:
            self.used += 1
            return True
        self.omitted += 1
        self.omitted_error = self.omitted_error or severity is Severity.ERROR
        return False

    def summary(self) -> Finding | None:
        """The RK-XSD009 finding for what was left out, or None when nothing was."""
        if not self.omitted:
            return None
        return make_finding(
            "RK-XSD009",
            path="/",
            severity=Severity.ERROR if self.omitted_error else Severity.WARNING,
            limit=self.limit,
            actual=self.omitted,
        )
