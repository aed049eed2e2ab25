"""Rule date_birth (std:ResidentDate): 和暦 in its era, 不詳 and non-calendar dates only with
asGiven, the iso attribute equal to the written date."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import REGISTRY
from bus.rules import RULES, RuleViolation
from bus.rules.resident_date import date_birth

AS_GIVEN = {"asGiven": "true"}


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        ("平成元年1月8日", "1989-01-08"),
        ("昭和64年1月7日", "1989-01-07"),  # simply inside 昭和
        ("明治45年7月30日", "1912-07-30"),  # the change day written in the old era
        ("大正元年7月30日", "1912-07-30"),
        ("大正15年12月25日", "1926-12-25"),
        ("平成31年5月1日", "2019-05-01"),
        ("令和元年5月1日", "2019-05-01"),
        ("令和6年2月29日", "2024-02-29"),
        ("平成12年2月29日", "2000-02-29"),
        ("㍼50年10月10日", "1975-10-10"),
        ("S50.10.10", "1975-10-10"),
        ("2024-04-08", "2024-04-08"),
        ("令和６年４月８日", "2024-04-08"),
        ("明治6年1月1日", "1873-01-01"),
    ],
)
def test_calendar_dates_pass(value: str, iso: str) -> None:
    assert date_birth(value, {}) == []
    assert date_birth(value, {"iso": iso}) == []
    assert date_birth(value, {"iso": iso, "asGiven": "false"}) == []


@pytest.mark.parametrize(
    ("value", "iso", "expected"),
    [
        ("平成元年1月8日", "1989-01-09", "1989-01-08"),
        ("明治45年7月30日", "1912-07-29", "1912-07-30"),
        ("2024-04-08", "2024-4-8", "2024-04-08"),
        ("令和6年4月8日", "2018-04-08", "2024-04-08"),  # converted with a wrong era offset
    ],
)
def test_iso_must_match(value: str, iso: str, expected: str) -> None:
    assert date_birth(value, {"iso": iso}) == [
        RuleViolation("RK-DOM013", {"expected": expected, "actual": iso})
    ]


@pytest.mark.parametrize(
    "value",
    [
        "平成32年1月1日",
        "令和0年5月1日",
        "明治46年1月1日",
        "明治45年7月31日",
        "大正15年12月26日",
        "昭和64年1月9日",
        "平成元年1月7日",
        "令和元年4月30日",
    ],
)
def test_outside_era_even_as_given(value: str) -> None:
    expected = RuleViolation("RK-DOM010", {"actual": value})
    assert expected in date_birth(value, {})
    assert date_birth(value, AS_GIVEN) == [expected]


@pytest.mark.parametrize("value", ["令和5年13月1日", "2024-01-32", "令和5年0月1日", "2024年4月0日"])
def test_structurally_impossible(value: str) -> None:
    assert date_birth(value, {}) == [RuleViolation("RK-DOM011", {})]
    assert date_birth(value, AS_GIVEN) == []


@pytest.mark.parametrize(
    "value", ["2023-02-29", "令和5年2月29日", "令和6年4月31日", "昭和40年2月30日", "1900-02-29"]
)
def test_non_calendar_dates_need_as_given(value: str) -> None:
    assert date_birth(value, {}) == [RuleViolation("RK-DOM012", {})]
    assert date_birth(value, {"asGiven": "false"}) == [RuleViolation("RK-DOM012", {})]
    assert date_birth(value, AS_GIVEN) == []
    assert date_birth(value, {"asGiven": "1"}) == []


def test_lunisolar_meiji_dates_need_as_given() -> None:
    """Before 明治6年 dates are lunisolar: no ISO equivalent by arithmetic."""
    assert date_birth("明治5年12月1日", {}) == [RuleViolation("RK-DOM012", {})]
    assert date_birth("明治元年1月1日", AS_GIVEN) == []


@pytest.mark.parametrize(
    "value", ["年月日不詳", "令和○年頃", "昭和20年頃", "不詳", "", "昭和20年5月", "unknown"]
)
def test_unknown_dates_need_as_given(value: str) -> None:
    assert date_birth(value, {}) == [RuleViolation("RK-DOM011", {})]
    assert date_birth(value, {"asGiven": "0"}) == [RuleViolation("RK-DOM011", {})]
    assert date_birth(value, AS_GIVEN) == []
    assert date_birth(value, {"asGiven": " true "}) == []


@pytest.mark.parametrize("value", ["年月日不詳", "令和5年2月29日", "令和5年13月1日"])
def test_iso_on_a_non_calendar_date(value: str) -> None:
    assert date_birth(value, {**AS_GIVEN, "iso": "2023-03-01"}) == [
        RuleViolation("RK-DOM013", {"expected": value, "actual": "2023-03-01"})
    ]


def test_registered_and_in_rules() -> None:
    assert RULES["date_birth"] is date_birth
    for code in ("RK-DOM010", "RK-DOM011", "RK-DOM012", "RK-DOM013"):
        assert code in REGISTRY


@settings(database=None, max_examples=300)
@given(
    value=st.text(max_size=50)
    | st.from_regex(
        r"(明治|大正|昭和|平成|令和|R|H)[0-9元]{1,2}年[0-9]{1,2}月[0-9]{1,2}日", fullmatch=True
    ),
    attrs=st.dictionaries(st.sampled_from(["iso", "asGiven"]), st.text(max_size=12)),
)
def test_any_text_gives_a_list(value: str, attrs: dict[str, str]) -> None:
    result = date_birth(value, attrs)
    assert isinstance(result, list)
    assert all(v.code in REGISTRY for v in result)
