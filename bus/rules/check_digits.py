"""Check digits (検査数字) of the identifiers municipalities exchange.

Each scheme has ``<scheme>_check_digit(base) -> int`` (raises ``ValueError`` on a base that is
not ASCII digits of the right length; the sample-data generator uses it) and
``<scheme>_valid(full) -> bool`` (never raises). Formulas and verified values:
/work/shared/reference/domain-facts.md §3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from operator import mul

from bus.rules.violation import RuleFunction, RuleViolation


def _digits(text: str, length: int | None) -> bytes:
    """ASCII digits only: full-width digits, spaces and hyphens are refused, not normalised."""
    if not (text.isascii() and text.isdigit()) or (length is not None and len(text) != length):
        raise ValueError(f"expected {length or 'some'} ASCII digits")
    return text.encode("ascii")


def _weighted_sum(digits: bytes, weights: tuple[int, ...]) -> int:
    """Σ digit × weight, left to right, in C: Σ w·(c − 48) = Σ w·c − 48·Σ w."""
    total: int = sum(map(mul, weights, digits))
    return total - 48 * sum(weights[: len(digits)])


def _qn_weights(length: int) -> tuple[int, ...]:
    """個人番号-style Qn for a ``length``-digit base, left to right (n counts from the right)."""
    return tuple(n + 1 if n <= 6 else n - 5 for n in range(length, 0, -1))


_LG_WEIGHTS = (6, 5, 4, 3, 2)
_MY_NUMBER_WEIGHTS = _qn_weights(11)
_RESIDENT_CODE_WEIGHTS = _qn_weights(10)
_CORPORATE_WEIGHTS = tuple(1 if n % 2 else 2 for n in range(12, 0, -1))


def _mod11(total: int) -> int:
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


# Each scheme's check digit from already-checked ASCII digit bytes (the base only).
def _lg(digits: bytes) -> int:
    return (11 - _weighted_sum(digits, _LG_WEIGHTS) % 11) % 10


def _my_number(digits: bytes) -> int:
    return _mod11(_weighted_sum(digits, _MY_NUMBER_WEIGHTS))


def _resident_code(digits: bytes) -> int:
    return _mod11(_weighted_sum(digits, _RESIDENT_CODE_WEIGHTS))


def _corporate(digits: bytes) -> int:
    return 9 - _weighted_sum(digits, _CORPORATE_WEIGHTS) % 9


@cache
def _atena_weights(length: int) -> tuple[int, ...]:
    return tuple(2 + i % 6 for i in range(length - 1, -1, -1))


def _atena(digits: bytes) -> int:
    return _mod11(_weighted_sum(digits, _atena_weights(len(digits))))


def lg_code_check_digit(base: str) -> int:
    """全国地方公共団体コード: 5 digits × 6,5,4,3,2; check = last digit of 11 − (S mod 11)."""
    return _lg(_digits(base, 5))


def my_number_check_digit(base: str) -> int:
    """個人番号 (総務省令第85号 第5条): Pn = n-th base digit from the right, Qn = n+1 (n ≤ 6)
    or n−5 (n ≥ 7); r = Σ Pn·Qn mod 11; check = 0 if r ≤ 1 else 11 − r."""
    return _my_number(_digits(base, 11))


def resident_code_check_digit(base: str) -> int:
    """住民票コード: modulus 11 over 10 digits with 個人番号's weights (rem ≤ 1 → 0).

    Only "modulus 11" is confirmed (告示第436号 not read); hence a warning, not an error."""
    return _resident_code(_digits(base, 10))


def corporate_number_check_digit(base: str) -> int:
    """法人番号 (財務省令第70号 第2条): the check digit comes FIRST; Qn = 1 (n odd) / 2 (n even)
    from the right of the 12 base digits; check = 9 − (Σ Pn·Qn mod 9)."""
    return _corporate(_digits(base, 12))


def atena_number_check_digit(base: str) -> int:
    """宛名番号・世帯番号: M11 W2〜7 (住民記録システム標準仕様書 §1.1.13). Weights 2,3,…,7,2,…
    from the rightmost base digit; check = 11 − (S mod 11), remainder 0 → 0.

    Remainder 1 (11 − 1 = 10, not a digit) is unstated in the spec; like 個人番号 and the
    local-government code we map it to 0 — the lenient reading (a system that never issues
    such numbers passes too)."""
    return _atena(_digits(base, None))


def _valid(full: str, length: int | None, check: Callable[[bytes], int], first: bool) -> bool:
    if len(full) < 2 or (length is not None and len(full) != length):
        return False
    if not (full.isascii() and full.isdigit()):
        return False
    raw = full.encode("ascii")
    if first:
        return check(raw[1:]) == raw[0] - 48
    return check(raw[:-1]) == raw[-1] - 48


def lg_code_valid(full: str) -> bool:
    return _valid(full, 6, _lg, first=False)


def my_number_valid(full: str) -> bool:
    return _valid(full, 12, _my_number, first=False)


def corporate_number_valid(full: str) -> bool:
    return _valid(full, 13, _corporate, first=True)


def atena_number_valid(full: str) -> bool:
    """Any length ≥ 2 (base + the last check digit)."""
    return _valid(full, None, _atena, first=False)


def resident_code_valid(full: str) -> bool:
    return _valid(full, 11, _resident_code, first=False)


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
