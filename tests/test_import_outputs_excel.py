"""The import's outputs as staff open them in Japanese Excel: the 評価変更リスト's XLSX (text
cells formatted as text, header frozen, filter, readable widths, formula-looking text kept
text), its CSV (formula-looking text quoted, full-width ＝ included) and the error report,
through the real ``renkei import notices``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import pytest
from lxml import etree
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from bus.imports.outputs import LIST_COLUMNS, write_csv, write_list

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RENKEI = str(Path(sys.executable).with_name("renkei"))
HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,家屋番号,"
    "種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)
HOSTILE_NAME = '=WEBSERVICE("http://example.invalid/")'
LINES = [
    HEADER,
    # leading zeros in 受付番号 and 不動産番号, a 地番 Excel reads as a date, a formula as a name
    "令和6年4月3日,000123,所有権移転,令和6年3月25日売買,0100000000011,武雄市武雄町大字富岡,1-2,"
    '宅地,215.33,,,,佐賀県武雄市武雄町大字富岡1番地,"=WEBSERVICE(""http://example.invalid/"")",'
    ",,佐賀県武雄市武雄町大字富岡2番地,＝１＋１",
    # co-owners with 持分 1/2 (a date to Excel), a 所在 starting with a full-width ＝
    "令和6年4月4日,0001,所有権移転,令和6年3月1日相続,4100000000028,＝1+1武雄市北方町大字志久,3/4,"
    "田,10,,,,佐賀県武雄市北方町大字志久1番地,山田　太郎／山田　花子,,1/2／1/2,,",
    # errors: a bad date and too few fields, on lines that carry a name and an address
    "令和6年13月1日,1004,所有権移転,令和6年3月1日売買,4100000000042,武雄市朝日町大字甘久,20番,"
    "宅地,50,,,,佐賀県武雄市朝日町大字甘久999番地,秘密　花子,,,,",
    "令和6年4月6日,1005,所有権移転,武雄市朝日町大字甘久888番地,内緒　次郎",
]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("excel")
    notices = base / "notices.csv"
    notices.write_bytes(("\r\n".join(LINES) + "\r\n").encode("utf-8"))
    env = {**os.environ, "RENKEI_DATA_DIR": str(base / "data"), "COLUMNS": "400"}
    command = [RENKEI, "import", "notices", str(notices), "--tenant", "412066"]
    done = subprocess.run(
        [*command, "--out", str(base / "out")],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "新規 2 / 重複 0 / エラー 2"
    return base / "out"


def _one(out: Path, suffix: str) -> Path:
    [found] = [p for p in out.iterdir() if p.name.endswith(suffix)]
    return found


def _csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def _shown_width(text: str) -> int:
    """Columns of ``0`` a text takes in Excel's default font: a full-width character two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_every_list_cell_is_text_formatted_as_text(out: Path) -> None:
    """Numbers with leading zeros, a 13-digit 不動産番号, 1-2 and 1/2 stay as written: text
    cells in the text format (``@``), so that a cell staff edit stays text too."""
    sheet = load_workbook(_one(out, "評価変更リスト.xlsx"))["評価変更リスト"]
    cells = [c for row in sheet.iter_rows() for c in row if c.value is not None]
    assert {(c.data_type, c.number_format) for c in cells} == {("s", "@")}
    values = {c.value for c in cells}
    assert {"000123", "0100000000011", "1-2", "0001", "3/4", "1/2", HOSTILE_NAME} <= values
    assert "2024-04-03" in values  # 受付年月日 as text yyyy-mm-dd: sorts as dates do


def test_the_list_opens_ready_to_work(out: Path) -> None:
    """Header row frozen, a filter over the header and every row, widths for Japanese text."""
    sheet = load_workbook(_one(out, "評価変更リスト.xlsx"))["評価変更リスト"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{get_column_letter(len(LIST_COLUMNS))}{sheet.max_row}"
    for number, title in enumerate(LIST_COLUMNS, 1):
        width = sheet.column_dimensions[get_column_letter(number)].width
        assert width >= _shown_width(title) + 2, title
    assert sheet.column_dimensions["D"].width >= 30  # 所在
    assert sheet.column_dimensions["C"].width >= 15  # 不動産番号, 13 digits


def test_each_sheet_of_a_long_list_opens_ready_to_work(tmp_path: Path) -> None:
    rows = [["2024-04-08", str(n).zfill(6)] + [""] * 14 for n in range(25)]
    write_list(tmp_path / "l.xlsx", tmp_path / "l.csv", iter(rows), "utf-8", sheet_rows=10)
    book = load_workbook(tmp_path / "l.xlsx")
    assert book.sheetnames == [f"評価変更リスト{n}" for n in ("", 2, 3)]
    assert all(len(name) <= 31 and not set(name) & set("[]:*?/\\") for name in book.sheetnames)
    assert [s.auto_filter.ref for s in book.worksheets] == ["A1:P10", "A1:P10", "A1:P8"]
    assert {s.freeze_panes for s in book.worksheets} == {"A2"}
    assert {s["B2"].number_format for s in book.worksheets} == {"@"}


def test_formula_looking_text_is_quoted_in_the_list_csv(out: Path) -> None:
    listing = _csv(_one(out, "評価変更リスト.csv"))
    assert listing[0] == list(LIST_COLUMNS)
    names = {row[10] for row in listing[1:]}
    assert "'" + HOSTILE_NAME in names and HOSTILE_NAME not in names
    assert "'=1+1" in names  # ＝１＋１, folded to half width as names are shown
    locations = {row[3] for row in listing[1:]}
    assert locations == {"武雄市武雄町大字富岡", "'＝1+1武雄市北方町大字志久"}
    # the CSV holds the text as it is: Excel may show these as numbers and dates (the XLSX not)
    assert {"000123", "0100000000011", "1-2", "1/2", "3/4"} <= {c for r in listing for c in r}


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_full_width_formula_heads_are_quoted_in_a_csv(tmp_path: Path, encoding: str) -> None:
    """Japanese Excel reads ＝ ＋ － ＠ typed or read at the head of a cell as = + - @."""
    cells = ["＝1+1", "＋81", "－2+3", "＠SUM(A1)", "＝", "－", "a＝b"]
    write_csv(tmp_path / "out.csv", ["a"], [cells], encoding)
    codec = "utf-8-sig" if encoding == "utf-8" else "cp932"
    with (tmp_path / "out.csv").open(encoding=codec, newline="") as handle:
        read = list(csv.reader(handle))
    assert read[1] == ["'＝1+1", "'＋81", "'－2+3", "'＠SUM(A1)", "＝", "－", "a＝b"]


def test_the_error_report_tells_lines_in_japanese_first_without_personal_data(out: Path) -> None:
    report = _csv(_one(out, "エラー.csv"))
    assert report[0] == ["行", "バイト位置", "項目", "コード", "メッセージ", "message"]
    assert [(row[0], row[3]) for row in report[1:]] == [("4", "RK-IMP003"), ("5", "RK-IMP002")]
    assert all(row[0].isdigit() and row[1].isdigit() for row in report[1:])  # numbers to Excel
    text = "".join(c for row in report for c in row)
    for personal in ("秘密", "花子", "内緒", "次郎", "999番地", "888番地"):
        assert personal not in text
    assert all(row[4].startswith(row[0] + " 行目") for row in report[1:])


def test_numbers_kept_as_text_are_not_marked_as_errors(out: Path) -> None:
    """Excel marks text that looks like a number (000123, 不動産番号) with a green triangle and
    offers 「数値に変換する」, which drops the zeros: the list tells Excel to ignore that."""
    with zipfile.ZipFile(_one(out, "評価変更リスト.xlsx")) as archive:
        sheet = etree.fromstring(archive.read("xl/worksheets/sheet1.xml"))
    [ignored] = sheet.findall(f"{{{MAIN}}}ignoredErrors/{{{MAIN}}}ignoredError")
    assert ignored.get("numberStoredAsText") == "1"
    assert ignored.get("sqref") == f"A1:{get_column_letter(len(LIST_COLUMNS))}1048576"
    names = [etree.QName(child).localname for child in sheet]
    assert names.index("pageMargins") < names.index("ignoredErrors")  # the schema's order
