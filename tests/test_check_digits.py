"""Check digits (検査数字): verified values pass, broken ones fail, odd input never raises."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import REGISTRY
from bus.rules import RULES, RuleViolation
from bus.rules import check_digits as cd

LG_CODES = [
    "131016", "011002", "182079", "271004", "010006",  # 千代田区 札幌市 … verified
    "412066", "412074", "412091", "414239", "414247", "414255",  # the Saga pilot towns
    "410004",  # 佐賀県
]  # fmt: skip
MY_NUMBERS = ["983205673214"]
CORPORATE_NUMBERS = ["4011001098993", "7123456789012"]
RESIDENT_CODES = ["24727059608"]
# Hand-computed M11 W2〜7: base 1234567 → 7·2+6·3+5·4+4·5+3·6+2·7+1·2 = 106, 106 % 11 = 7 → 4.
ATENA_NUMBERS = [
    "12345674",
    "19",  # S = 2 → 11 − 2 = 9
    "00",  # S = 0 → remainder 0 → 0
    "60",  # S = 12 → remainder 1 → 0 (the documented choice)
    "1000004",  # six base digits: the leftmost weighs 7 → 11 − 7 = 4
    "10000009",  # seven: the weights cycle, the leftmost weighs 2 again → 9
]

SCHEMES: list[tuple[str, Callable[[str], bool], list[str], str]] = [
    ("lg_code", cd.lg_code_valid, LG_CODES, "RK-DOM001"),
    ("my_number", cd.my_number_valid, MY_NUMBERS, "RK-DOM002"),
    ("corporate_number", cd.corporate_number_valid, CORPORATE_NUMBERS, "RK-DOM003"),
    ("atena_number", cd.atena_number_valid, ATENA_NUMBERS, "RK-DOM004"),
    ("resident_code", cd.resident_code_valid, RESIDENT_CODES, "RK-DOM005"),
]
GOOD = [(rule, valid, value, code) for rule, valid, values, code in SCHEMES for value in values]


def _other_check_digits(rule: str, value: str) -> list[str]:
    """The value with every other check digit (first for 法人番号, last otherwise)."""
    if rule == "corporate_number":
        return [d + value[1:] for d in "0123456789" if d != value[0]]
    return [value[:-1] + d for d in "0123456789" if d != value[-1]]


@pytest.mark.parametrize(("rule", "valid", "value", "code"), GOOD)
def test_known_good_values_pass(
    rule: str, valid: Callable[[str], bool], value: str, code: str
) -> None:
    assert valid(value)
    assert RULES[rule](value, {}) == []


@pytest.mark.parametrize(("rule", "valid", "value", "code"), GOOD)
def test_every_other_check_digit_fails(
    rule: str, valid: Callable[[str], bool], value: str, code: str
) -> None:
    for broken in _other_check_digits(rule, value):
        assert not valid(broken), broken
        assert RULES[rule](broken, {}) == [RuleViolation(code, {})]


@pytest.mark.parametrize(
    ("function", "base", "digit"),
    [
        (cd.lg_code_check_digit, "13101", 6),
        (cd.lg_code_check_digit, "41000", 4),
        (cd.my_number_check_digit, "98320567321", 4),
        (cd.corporate_number_check_digit, "011001098993", 4),
        (cd.corporate_number_check_digit, "123456789012", 7),
        (cd.resident_code_check_digit, "2472705960", 8),
        (cd.atena_number_check_digit, "1234567", 4),
        (cd.atena_number_check_digit, "6", 0),
    ],
)
def test_check_digit_generators(function: Callable[[str], int], base: str, digit: int) -> None:
    assert function(base) == digit


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("lg_code", "131017"),  # wrong check digit
        ("lg_code", "231016"),  # a base digit changed
        ("my_number", "983205673215"),
        ("my_number", "893205673214"),  # two digits transposed
        ("corporate_number", "4011001098994"),
        ("corporate_number", "4101001098993"),
        ("resident_code", "24727059609"),
        ("atena_number", "12345675"),
        ("atena_number", "21345674"),
    ],
)
def test_broken_values_fail(rule: str, value: str) -> None:
    assert len(RULES[rule](value, {})) == 1


BAD_FORMS = [
    "",
    "1",
    "１３１０１６",  # full-width digits
    " 131016",
    "131016 ",
    "13-1016",
    "1310１6",
    "13101a",
    "٣١٠١٦",  # Arabic-Indic digits: str.isdigit() is true, ASCII is not
    "²³",
]


@pytest.mark.parametrize("rule", [scheme[0] for scheme in SCHEMES])
@pytest.mark.parametrize("value", BAD_FORMS)
def test_non_ascii_digits_are_violations_not_exceptions(rule: str, value: str) -> None:
    assert [v.code for v in RULES[rule](value, {})] == [
        code for name, _, _, code in SCHEMES if name == rule
    ]


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("lg_code", "1310160"),
        ("lg_code", "13101"),
        ("my_number", "98320567321"),
        ("corporate_number", "011001098993"),
        ("resident_code", "247270596080"),
    ],
)
def test_wrong_length_fails(rule: str, value: str) -> None:
    assert RULES[rule](value, {})


@pytest.mark.parametrize(
    ("function", "base"),
    [
        (cd.lg_code_check_digit, "1310"),
        (cd.lg_code_check_digit, "１３１０１"),
        (cd.my_number_check_digit, "9832056732"),
        (cd.corporate_number_check_digit, "01100109899x"),
        (cd.resident_code_check_digit, ""),
        (cd.atena_number_check_digit, ""),
        (cd.atena_number_check_digit, "12 3"),
    ],
)
def test_generators_refuse_bad_bases(function: Callable[[str], int], base: str) -> None:
    with pytest.raises(ValueError):
        function(base)


def test_codes_are_registered() -> None:
    for _, _, _, code in SCHEMES:
        assert code in REGISTRY


def test_generated_numbers_validate() -> None:
    base = "12345678901"
    assert cd.my_number_valid(base + str(cd.my_number_check_digit(base)))
    assert cd.corporate_number_valid(str(cd.corporate_number_check_digit(base + "2")) + base + "2")
    assert cd.resident_code_valid(base[:10] + str(cd.resident_code_check_digit(base[:10])))
    assert cd.lg_code_valid(base[:5] + str(cd.lg_code_check_digit(base[:5])))
    assert cd.atena_number_valid(base + str(cd.atena_number_check_digit(base)))


@settings(database=None, max_examples=300)
@given(value=st.text(), rule=st.sampled_from([scheme[0] for scheme in SCHEMES]))
def test_any_text_gives_a_list(value: str, rule: str) -> None:
    result = RULES[rule](value, {})
    assert isinstance(result, list)
    assert all(v.code.startswith("RK-DOM") for v in result)


@settings(database=None, max_examples=200)
@given(digits=st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_my_number_generator_roundtrip(digits: str) -> None:
    full = digits + str(cd.my_number_check_digit(digits))
    assert cd.my_number_valid(full)
    assert not cd.my_number_valid(full[:-1] + str((int(full[-1]) + 1) % 10))
