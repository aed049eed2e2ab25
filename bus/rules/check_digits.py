"""Check digits (検査数字) of the identifiers municipalities exchange.

Each scheme has ``<scheme>_check_digit(base) -> int`` (raises ``ValueError`` on a base that is
not ASCII digits of the right length; the sample-data generator uses it) and
``<scheme>_valid(full) -> bool`` (never raises). Formulas and verified values:
/work/shared/reference/domain-facts.md §3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bus.rules.violation import RuleFunction, RuleViolation


def _digits(text: str, length: int | None) -> list[int]:
    """ASCII digits only: full-width digits, spaces and hyphens are refused, not normalised."""
    if not (text.isascii() and text.isdigit()) or (length is not None and len(text) != length):
        raise ValueError(f"expected {length or 'some'} ASCII digits")
    return [ord(ch) - 48 for ch in text]


def lg_code_check_digit(base: str) -> int:
    """全国地方公共団体コード: 5 digits × 6,5,4,3,2; check = last digit of 11 − (S mod 11)."""
    total = sum(d * w for d, w in zip(_digits(base, 5), (6, 5, 4, 3, 2), strict=True))
    return (11 - total % 11) % 10


def my_number_check_digit(base: str) -> int:
    """個人番号 (総務省令第85号 第5条): Pn = n-th base digit from the right, Qn = n+1 (n ≤ 6)
    or n−5 (n ≥ 7); r = Σ Pn·Qn mod 11; check = 0 if r ≤ 1 else 11 − r."""
    return _mod11_qn(_digits(base, 11))


def resident_code_check_digit(base: str) -> int:
    """住民票コード: modulus 11 over 10 digits with 個人番号's weights (rem ≤ 1 → 0).

    Only "modulus 11" is confirmed (告示第436号 not read); hence a warning, not an error."""
    return _mod11_qn(_digits(base, 10))


def _mod11_qn(digits: list[int]) -> int:
    total = sum(d * (n + 1 if n <= 6 else n - 5) for n, d in enumerate(reversed(digits), 1))
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def corporate_number_check_digit(base: str) -> int:
    """法人番号 (財務省令第70号 第2条): the check digit comes FIRST; Qn = 1 (n odd) / 2 (n even)
    from the right of the 12 base digits; check = 9 − (Σ Pn·Qn mod 9)."""
    digits = _digits(base, 12)
    total = sum(d * (1 if n % 2 else 2) for n, d in enumerate(reversed(digits), 1))
    return 9 - total % 9


def atena_number_check_digit(base: str) -> int:
    """宛名番号・世帯番号: M11 W2〜7 (住民記録システム標準仕様書 §1.1.13). Weights 2,3,…,7,2,…
    from the rightmost base digit; check = 11 − (S mod 11), remainder 0 → 0.

    Remainder 1 (11 − 1 = 10, not a digit) is unstated in the spec; like 個人番号 and the
    local-government code we map it to 0 — the lenient reading (a system that never issues
    such numbers passes too)."""
    digits = _digits(base, None)
    total = sum(d * (2 + i % 6) for i, d in enumerate(reversed(digits)))
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def _valid(full: str, length: int | None, check: Callable[[str], int], first: bool) -> bool:
    if not (full.isascii() and full.isdigit()) or len(full) < 2:
        return False
    if length is not None and len(full) != length:
        return False
    base, digit = (full[1:], full[0]) if first else (full[:-1], full[-1])
    return check(base) == int(digit)


def lg_code_valid(full: str) -> bool:
    return _valid(full, 6, lg_code_check_digit, first=False)


def my_number_valid(full: str) -> bool:
    return _valid(full, 12, my_number_check_digit, first=False)


def corporate_number_valid(full: str) -> bool:
    return _valid(full, 13, corporate_number_check_digit, first=True)


def atena_number_valid(full: str) -> bool:
    """Any length ≥ 2 (base + the last check digit)."""
    return _valid(full, None, atena_number_check_digit, first=False)


def resident_code_valid(full: str) -> bool:
    return _valid(full, 11, resident_code_check_digit, first=False)


def _rule(code: str, valid: Callable[[str], bool]) -> RuleFunction:
    def rule(value: str, attrs: Mapping[str, str]) -> list[RuleViolation]:
        return [] if valid(value) else [RuleViolation(code, {})]

    rule.__doc__ = f"{code} unless the value passes {valid.__name__}."
    return rule


lg_code = _rule("RK-DOM001", lg_code_valid)
my_number = _rule("RK-DOM002", my_number_valid)
corporate_number = _rule("RK-DOM003", corporate_number_valid)
atena_number = _rule("RK-DOM004", atena_number_valid)
resident_code = _rule("RK-DOM005", resident_code_valid)
