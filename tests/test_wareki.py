"""Written dates (和暦/西暦) as staff and vendors write them, and the 元号 table as data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import era, wareki
from bus.wareki import WarekiDate

W = WarekiDate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("明治45年7月30日", W("明治", 45, 1912, 7, 30)),
        ("平成元年1月8日", W("平成", 1, 1989, 1, 8)),
        ("令和六年四月一日", W("令和", 6, 2024, 4, 1)),
        ("令和二十三年十月三十一日", W("令和", 23, 2041, 10, 31)),
        ("昭和十年十二月十日", W("昭和", 10, 1935, 12, 10)),
        ("昭和〇年一月一日", W("昭和", 0, 1925, 1, 1)),
        ("㍻31年4月26日", W("平成", 31, 2019, 4, 26)),
        ("㋿2年1月1日", W("令和", 2, 2020, 1, 1)),
        ("㍾45年7月30日", W("明治", 45, 1912, 7, 30)),
        ("㍽15年12月25日", W("大正", 15, 1926, 12, 25)),
        ("R06.04.03", W("令和", 6, 2024, 4, 3)),
        ("R1.5.1", W("令和", 1, 2019, 5, 1)),
        ("H31.4.30", W("平成", 31, 2019, 4, 30)),
        ("h31/4/30", W("平成", 31, 2019, 4, 30)),
        ("S64-1-7", W("昭和", 64, 1989, 1, 7)),
        ("Ｒ０６．０４．０３", W("令和", 6, 2024, 4, 3)),
        ("R060403", W("令和", 6, 2024, 4, 3)),
        ("昭50.10.10", W("昭和", 50, 1975, 10, 10)),
        ("4010108", W("平成", 1, 1989, 1, 8)),  # 年号コード + YYMMDD
        ("2024-04-08", W(None, None, 2024, 4, 8)),
        ("2024/04/08", W(None, None, 2024, 4, 8)),
        ("2024.4.8", W(None, None, 2024, 4, 8)),
        ("20240408", W(None, None, 2024, 4, 8)),
        ("2024年4月8日", W(None, None, 2024, 4, 8)),
        ("西暦2024年4月8日", W(None, None, 2024, 4, 8)),
        ("二〇二四年四月八日", W(None, None, 2024, 4, 8)),
        ("令和６年４月１日", W("令和", 6, 2024, 4, 1)),
        ("２０２４－０４－０８", W(None, None, 2024, 4, 8)),
        (" 令和 6年 4月 1日　", W("令和", 6, 2024, 4, 1)),
        ("令和5年13月32日", W("令和", 5, 2023, 13, 32)),  # calendar-unchecked
    ],
)
def test_parse(text: str, expected: WarekiDate) -> None:
    assert wareki.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "不詳",
        "年月日不詳",
        "令和○年頃",  # ○ (U+25CB) is a placeholder, not 〇
        "昭和20年頃",
        "昭和20年5月",
        "令和6年4月1日生",
        "R06.04/03",  # mixed separators
        "十十年1月1日",
        "令和二十十年1月1日",
        "令和十〇年1月1日",
        "X06.04.03",
        "2024-04",
        "2024-04-08T00:00:00",
        "1" * 100,
        "9060403",  # no era with code 9
    ],
)
def test_not_a_date(text: str) -> None:
    assert wareki.parse(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "明治元年1月1日",  # 明治 applied from 慶応4年1月1日 (start_written)
        "明治45年7月30日",
        "大正元年7月30日",
        "大正15年12月25日",
        "昭和元年12月25日",
        "昭和64年1月7日",
        "昭和64年1月8日",  # the change day, inclusive
        "平成元年1月8日",
        "平成31年4月30日",
        "平成31年5月1日",
        "令和元年5月1日",
        "令和99年1月1日",  # the current era has no end
        "2024-04-08",
    ],
)
def test_in_era(text: str) -> None:
    written = wareki.parse(text)
    assert written is not None and wareki.in_era(written)


@pytest.mark.parametrize(
    "text",
    [
        "平成32年1月1日",
        "令和0年5月1日",
        "明治46年1月1日",
        "明治45年7月31日",
        "大正元年7月29日",
        "大正15年12月26日",
        "昭和元年12月24日",
        "昭和64年1月9日",
        "平成元年1月7日",
        "平成31年5月2日",
        "令和元年4月30日",
    ],
)
def test_outside_era(text: str) -> None:
    written = wareki.parse(text)
    assert written is not None and not wareki.in_era(written)


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("明治45年7月30日", date(1912, 7, 30)),
        ("大正15年12月25日", date(1926, 12, 25)),
        ("平成元年1月8日", date(1989, 1, 8)),
        ("令和6年2月29日", date(2024, 2, 29)),
        ("明治6年1月1日", date(1873, 1, 1)),
        ("1850-01-01", date(1850, 1, 1)),  # a 西暦 date is Gregorian whatever its year
        ("令和5年2月29日", None),
        ("令和6年4月31日", None),
        ("令和6年13月1日", None),
        ("明治5年12月2日", None),  # lunisolar
        ("0000-01-01", None),
    ],
)
def test_to_gregorian(text: str, day: date | None) -> None:
    written = wareki.parse(text)
    assert written is not None and wareki.to_gregorian(written) == day


@pytest.mark.parametrize(
    ("day", "text"),
    [
        (date(1912, 7, 30), "大正元年7月30日"),  # a change day belongs to the new era
        (date(1989, 1, 7), "昭和64年1月7日"),
        (date(1989, 1, 8), "平成元年1月8日"),
        (date(2019, 4, 30), "平成31年4月30日"),
        (date(2019, 5, 1), "令和元年5月1日"),
        (date(2024, 4, 8), "令和6年4月8日"),
    ],
)
def test_from_gregorian_and_format(day: date, text: str) -> None:
    written = wareki.from_gregorian(day)
    assert written is not None
    assert wareki.format_wareki(written) == text
    assert wareki.parse(text) == written


def test_from_gregorian_before_the_reform() -> None:
    assert wareki.from_gregorian(date(1872, 12, 31)) is None
    assert wareki.from_gregorian(date(1800, 1, 1)) is None
    assert wareki.format_wareki(W(None, None, 2024, 4, 8)) == "2024-04-08"


def test_shipped_era_table() -> None:
    table = era.eras()
    assert [(e.code, e.name, e.letter, e.ligature, e.start.isoformat()) for e in table] == [
        ("1", "明治", "M", "㍾", "1868-01-25"),
        ("2", "大正", "T", "㍽", "1912-07-30"),
        ("3", "昭和", "S", "㍼", "1926-12-25"),
        ("4", "平成", "H", "㍻", "1989-01-08"),
        ("5", "令和", "R", "㋿", "2019-05-01"),
    ]
    assert era.lookup("h") is era.lookup("㍻") is era.lookup("4") is era.lookup("平")
    assert era.era_on(date(1868, 1, 24)) is None


_HEADER = "code,name,letter,ligature,initial,start,start_written\n"


@pytest.fixture
def fresh_tables() -> Iterator[None]:
    def clear() -> None:
        for cached in (era.eras, era._by_token, wareki._patterns, wareki._ligatures):
            cached.cache_clear()

    clear()
    yield
    clear()


def test_next_era_is_a_data_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_tables: None
) -> None:
    shipped = (era.codes_dir() / "era.csv").read_text(encoding="utf-8")
    (tmp_path / "era.csv").write_text(shipped + "6,新元,N,Ⓝ,新,2050-01-01,01-01\n", "utf-8")
    monkeypatch.setattr(era, "codes_dir", lambda: tmp_path)
    assert wareki.parse("N1.1.1") == W("新元", 1, 2050, 1, 1)
    assert wareki.parse("Ⓝ2年1月1日") == W("新元", 2, 2051, 1, 1)
    assert wareki.parse("6320101") == W("新元", 32, 2081, 1, 1)
    late_reiwa = wareki.parse("令和33年1月1日")
    assert late_reiwa is not None and not wareki.in_era(late_reiwa)
    change_day = wareki.parse("令和32年1月1日")
    assert change_day is not None and wareki.in_era(change_day)
    assert wareki.from_gregorian(date(2050, 1, 1)) == W("新元", 1, 2050, 1, 1)


@pytest.mark.parametrize(
    "rows",
    [
        "1,明治,M,㍾,明,1868-01-25,01-01\n2,大正,T,㍽,大,1868-01-01,01-01\n",  # out of order
        "1,明治,M,㍾,明,1868-01-25,01-01\n1,大正,T,㍽,大,1912-07-30,07-30\n",  # code twice
        "1,明治,M,㍾,明,1868-13-25,01-01\n",  # bad date
        "1,明治,MX,㍾,明,1868-01-25,01-01\n",  # letter
        "1,大正,T,㍽,大,1912-07-30,08-01\n",  # written start after start
        "",  # empty
    ],
)
def test_bad_era_tables(tmp_path: Path, rows: str) -> None:
    path = tmp_path / "era.csv"
    path.write_text(_HEADER + rows, encoding="utf-8")
    with pytest.raises(ValueError, match=r"era\.csv"):
        era.load_eras(path)


def test_bad_era_columns(tmp_path: Path) -> None:
    path = tmp_path / "era.csv"
    path.write_text("code,name\n1,明治\n", encoding="utf-8")
    with pytest.raises(ValueError, match="columns"):
        era.load_eras(path)


@settings(database=None, max_examples=400)
@given(
    st.text(max_size=45)
    | st.from_regex(
        r"(明治|大正|昭和|平成|令和|[MTSHR㍾㍽㍼㍻㋿])[0-9元〇一二三四五六七八九十]{1,3}[年.](.{1,3})[月.](.{1,3})日?",
        fullmatch=True,
    )
)
def test_any_text(text: str) -> None:
    written = wareki.parse(text)
    if written is not None:
        wareki.in_era(written)
        wareki.to_gregorian(written)
        wareki.format_wareki(written)
