"""Domain rules (pure functions, no XML): ``RULES[name](value, attrs) -> list[RuleViolation]``.

Names are the catalogue's ``rule`` values. The validator turns violations into findings
(:func:`bus.errors.make_finding`, ``**violation.params``) and sets RK-DOM004's severity.
``kana``, ``date_event`` and ``date_deadline`` are enforced by the XSD (pattern, ``xs:date``);
their functions only check the character repertoire, like ``text``.
"""

from __future__ import annotations

from bus.rules import charset, check_digits, resident_date
from bus.rules.violation import RuleFunction, RuleViolation

RULES: dict[str, RuleFunction] = {
    "lg_code": check_digits.lg_code,
    "my_number": check_digits.my_number,
    "corporate_number": check_digits.corporate_number,
    "atena_number": check_digits.atena_number,
    "resident_code": check_digits.resident_code,
    "kana": charset.text,
    "date_birth": resident_date.date_birth,
    "date_event": charset.text,
    "date_deadline": charset.text,
    "text": charset.text,
}

__all__ = ["RULES", "RuleFunction", "RuleViolation"]
