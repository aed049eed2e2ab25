"""The next 改元 as an operator meets it: a copy of the era table with one row added
(``RENKEI_ERA_TABLE``), read by every part that reads or writes 和暦 dates.

The hypothetical era 新元 (letter N, 年号コード 6 / 06, from 2027-05-01) has no ligature yet
(㋿ only came with Unicode 12.1, after 令和 began), so its ligature column is empty. N is
free: M T S H R are taken, and a reading that starts with one of them would be refused by
the table's own check. The shipped schemas/codes/era.csv is never edited.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.console.dates import DateRefused, parse_day
from bus import era, wareki
from bus.cli.options import moment
from bus.mapping.dates import calendar_day, iso_day
from bus.mapping.operations import format_date
from bus.settings import Settings

NEXT_ERA = "6,新元,N,,新,2027-05-01,05-01\n"
RENKEI = str(Path(sys.executable).with_name("renkei"))


def _table(directory: Path, extra: str) -> Path:
    path = directory / "era.csv"
    path.write_text(era.shipped_table().read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


@pytest.fixture
def next_era(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = _table(tmp_path, NEXT_ERA)
    monkeypatch.setenv(era.ERA_TABLE_ENV, str(path))
    era.reload()
    yield path
    monkeypatch.delenv(era.ERA_TABLE_ENV)
    era.reload()


def test_the_operator_copy_is_the_table_in_force(next_era: Path) -> None:
    assert [e.name for e in era.eras()][-2:] == ["令和", "新元"]
    assert wareki.parse("新元元年5月1日") == wareki.WarekiDate("新元", 1, 2027, 5, 1)
    assert wareki.from_gregorian(date(2027, 4, 30)) == wareki.WarekiDate("令和", 9, 2027, 4, 30)
    assert wareki.from_gregorian(date(2027, 5, 1)) == wareki.WarekiDate("新元", 1, 2027, 5, 1)


def test_an_empty_ligature_is_no_spelling(next_era: Path) -> None:
    # with "" among the spellings, a date with no era at all read as 新元
    assert wareki.parse("12年3月4日") is None
    assert "" not in era.eras()[-1].tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("新元元年5月1日", "2027-05-01"),
        ("新元1年5月1日", "2027-05-01"),
        ("新元01年5月1日", "2027-05-01"),
        ("N01.05.01", "2027-05-01"),
        ("n1/5/1", "2027-05-01"),
        ("Ｎ０１．０５．０１", "2027-05-01"),
        ("6010501", "2027-05-01"),  # 1-digit 年号コード + YYMMDD
        ("06010501", "2027-05-01"),  # 2-digit 年号コード
        ("N010501", "2027-05-01"),
        ("新元二年三月一日", "2028-03-01"),
        ("令和9年4月30日", "2027-04-30"),  # the last day of 令和
        ("令和9年5月1日", "2027-05-01"),  # the change day, written in the old era
        ("令和9年5月2日", None),
        ("令和10年1月1日", None),  # 令和 has ended
        ("新元元年4月30日", None),  # before 新元
        ("平成32年1月1日", None),
    ],
)
def test_mapping_reads_the_new_era(next_era: Path, text: str, expected: str | None) -> None:
    assert iso_day(text) == expected
    day = calendar_day(text)
    assert (day.isoformat() if day else None) == expected


def test_the_mapping_tables_follow_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert iso_day("N01.05.01") is None  # the lookup tables, built from the shipped table
    assert iso_day("令和10年1月1日") == "2028-01-01"
    monkeypatch.setenv(era.ERA_TABLE_ENV, str(_table(tmp_path, NEXT_ERA)))
    era.reload()
    try:
        assert iso_day("N01.05.01") == "2027-05-01"
        assert iso_day("令和10年1月1日") is None
    finally:
        monkeypatch.delenv(era.ERA_TABLE_ENV)
        era.reload()
    assert iso_day("令和10年1月1日") == "2028-01-01"


def test_mapping_writes_the_new_era(next_era: Path) -> None:
    change_day = date(2027, 5, 1)
    written = {
        form: format_date(change_day, form)
        for form in ("wareki", "kanji", "era_code", "era_code2", "era_letter")
    }
    assert written == {
        "wareki": "新元元年5月1日",
        "kanji": "新元元年五月一日",
        "era_code": "6010501",
        "era_code2": "06010501",
        "era_letter": "N01.05.01",
    }
    assert format_date(date(2027, 4, 30), "wareki") == "令和9年4月30日"


def test_the_copy_must_keep_the_shipped_eras(tmp_path: Path) -> None:
    changed = tmp_path / "changed"
    changed.mkdir()
    path = changed / "era.csv"
    path.write_text(
        era.shipped_table().read_text(encoding="utf-8").replace(",R,", ",X,") + NEXT_ERA,
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="shipped eras unchanged"):
        era.load_table(path)
    with pytest.raises(ValidationError, match="era_table"):
        Settings(era_table=path)
    assert Settings(era_table=_table(tmp_path, NEXT_ERA)).era_table is not None


@pytest.mark.parametrize(
    "row",
    [
        "6,新元,n,,新,2027-05-01,05-01\n",  # the letter in lower case
        "6,新元,S,,新,2027-05-01,05-01\n",  # 昭和's letter (a reading Shingen)
        "6,新元,N,,令,2027-05-01,05-01\n",  # 令和's initial
        "6,,N,,新,2027-05-01,05-01\n",  # no name
        "5,新元,N,,新,2027-05-01,05-01\n",  # 令和's code
    ],
)
def test_a_wrong_new_row_is_refused(tmp_path: Path, row: str) -> None:
    with pytest.raises(ValueError, match=r"era\.csv"):
        era.load_table(_table(tmp_path, row))


@pytest.mark.parametrize("text", ["平成32年1月1日", "令和元年4月30日"])
def test_a_date_outside_its_era_is_refused_by_the_options(text: str) -> None:
    # the mapping (RK-MAP004) and the domain rules (RK-DOM010) refuse it; the CLI and the
    # console read it as the day it would be
    with pytest.raises(DateRefused) as refused:
        parse_day(text)
    assert refused.value.finding.code == "RK-CON011"
    with pytest.raises(Exception, match="RK-CON011"):
        moment(text, "--from")


def test_the_options_after_the_change(next_era: Path) -> None:
    assert parse_day("新元元年5月1日") == parse_day("令和9年5月1日") == date(2027, 5, 1)
    assert parse_day("N01.05.02") == date(2027, 5, 2)
    start = moment("6010501", "--from")
    assert start is not None and start.date() == date(2027, 5, 1)
    with pytest.raises(DateRefused) as refused:
        parse_day("令和10年1月1日")
    assert refused.value.finding.code == "RK-CON011"
    assert "2028-01-01 = 新元2年1月1日" in refused.value.finding.message_ja


@pytest.mark.slow
def test_import_notices_in_the_new_era(next_era: Path, tmp_path: Path) -> None:
    header = (Path(__file__).parents[1] / "mappings/golden/houmu").joinpath(
        "RegistrationNotice.inbound.full.input.csv"
    )
    lines = header.read_text(encoding="utf-8").splitlines()
    template = lines[1].split(",")
    forms = ["新元元年5月1日", "N01.05.02", "6010503", "令和9年5月1日", "令和10年1月1日"]
    rows = [lines[0]]
    for number, written in enumerate(forms, start=1):
        fields = [written, str(70000 + number), *template[2:]]
        fields[4] = f"{5616349780000 + number:013d}"
        rows.append(",".join(fields))
    notices = tmp_path / "notices.csv"
    notices.write_text("\n".join(rows) + "\n", encoding="utf-8")
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "out"
    command = [RENKEI, "import", "notices", str(notices), "--tenant", "412066", "--out", str(out)]
    done = subprocess.run([*command, "--jobs", "1"], env=env, capture_output=True, text=True)
    assert "新規 4 / 重複 0 / エラー 1" in done.stdout, done.stdout + done.stderr
    (listing,) = out.glob("*評価変更リスト.csv")
    with listing.open(encoding="utf-8-sig", newline="") as handle:
        days = {row["受付番号"]: row["受付年月日"] for row in csv.DictReader(handle)}
    assert days == {
        "70001": "2027-05-01",
        "70002": "2027-05-02",
        "70003": "2027-05-03",
        "70004": "2027-05-01",
    }
    (errors,) = out.glob("*エラー.csv")
    assert "受付年月日" in errors.read_text(encoding="utf-8-sig")
