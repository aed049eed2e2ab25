"""The result type shared by every domain rule (kept apart so rule modules import no cycle)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RuleViolation:
    """One broken rule: a registered ``RK-DOM`` code and the params its template needs."""

    code: str
    params: dict[str, str] = field(default_factory=dict)


RuleFunction = Callable[[str, Mapping[str, str]], list[RuleViolation]]
