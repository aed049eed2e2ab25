"""The 評価変更リスト writers: the plain-row XLSX path against openpyxl's own, one-pass output."""

from __future__ import annotations

import csv
import random
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.utils.exceptions import IllegalCharacterError
from openpyxl.writer.excel import ExcelWriter

from bus.imports.outputs import (
    _KEPT_CELLS,
    LIST_COLUMNS,
    XLSX_COMPRESSION,
    PlainRows,
    _plain_cells,
    filter_rows,
    lay_out,
    plain_row,
    write_csv,
    write_list,
    write_xlsx,
)

SHEET = "xl/worksheets/sheet1.xml"
IGNORED = (
    b'<ignoredErrors><ignoredError sqref="A1:P1048576" numberStoredAsText="1"/></ignoredErrors>'
)
TEXTS = [
    "", "武雄市武雄町大字川古", "松尾 一郎", " lead", "trail ", "  ", "a&b<c>d", "tab\there",
    "cr\r\nlf", "line\nbreak", "=SUM(A1:A2)", "=", "#N/A", "#REF!", "㈱佐賀不動産", "髙﨑①",
    "\ue000〓", "1/2", "0123", "x" * 40_000, "𠮟る", "\"quoted\"", "'apos'",
]  # fmt: skip
OTHERS: list[Any] = [None, 0, 12, -3.5, 1e20, True]


def _stock_sheet(path: Path, rows: list[list[Any]]) -> None:
    """The sheet stock openpyxl writes, but text kept text: ``=…`` and ``#N/A`` as strings,
    not the formula and the error openpyxl makes of them, in the text format; the list's
    widths, frozen header and filter."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet("評価変更リスト")
    lay_out(sheet)
    sheet.append([_text_cell(sheet, value) for value in LIST_COLUMNS])
    for row in rows:
        sheet.append(_text_cell(sheet, value) for value in row)  # raising inside append
    filter_rows(sheet, len(rows) + 1)
    book.save(path)


def _text_cell(sheet: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    cell = WriteOnlyCell(sheet, value)  # raises on a control character, as append does
    cell.data_type = "s"
    cell.number_format = "@"
    return cell


def _canonical(path: Path) -> bytes:
    return etree.tostring(etree.fromstring(_sheet(path)), method="c14n")


def _random_rows(rng: random.Random, count: int, pool: list[Any]) -> list[list[Any]]:
    return [[rng.choice(pool) for _ in range(rng.randint(0, 20))] for _ in range(count)]


@pytest.mark.parametrize("seed", range(6))
def test_the_sheet_is_the_one_openpyxl_writes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    pool = TEXTS + OTHERS if seed % 2 else [*TEXTS, None]
    rows = [*_random_rows(rng, 1_500, pool), TEXTS[:8] * 8, TEXTS[:7] * 10]  # 64, 70 wide
    assert any(not plain_row(r) for r in rows) and any(plain_row(r) for r in rows)
    _stock_sheet(tmp_path / "stock.xlsx", rows)
    assert write_xlsx(tmp_path / "plain.xlsx", iter(rows)) == len(rows)
    assert _canonical(tmp_path / "plain.xlsx") == _canonical(tmp_path / "stock.xlsx")


@pytest.mark.parametrize("seed", range(2))
def test_the_sheet_has_the_bytes_openpyxl_writes(tmp_path: Path, seed: int) -> None:
    """Plain rows are written as ready-made bytes between the XML stream's own writes: the
    same bytes (ASCII, character references) in the same order, batches and stock rows mixed.
    Empty text and empty rows, closed short here, are the next test's."""
    rng = random.Random(seed)
    texts = [t for t in TEXTS if t]
    drawn = _random_rows(rng, 1_200, [*texts, None, *OTHERS[1:3]])
    rows = [r for r in drawn if any(v is not None for v in r)] + [texts[:18]] * 300
    rows += [[f"<{n % 1_500}>", f" {n % 7}"] for n in range(4_000)]  # more than a column keeps
    _stock_sheet(tmp_path / "stock.xlsx", rows)
    write_xlsx(tmp_path / "plain.xlsx", iter(rows))
    assert _sheet(tmp_path / "plain.xlsx") == _sheet(tmp_path / "stock.xlsx")


def _deflated_size(data: bytes, level: int) -> int:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)  # a zip's raw deflate
    return len(compressor.compress(data) + compressor.flush())


def test_every_part_is_deflated_at_the_chosen_level(tmp_path: Path) -> None:
    rows = _random_rows(random.Random(7), 3_000, [*TEXTS[:19], None])
    write_xlsx(tmp_path / "list.xlsx", iter(rows))
    with zipfile.ZipFile(tmp_path / "list.xlsx") as archive:
        for info in archive.infolist():
            data = archive.read(info)
            assert info.compress_type == zipfile.ZIP_DEFLATED, info.filename
            assert info.compress_size == _deflated_size(data, XLSX_COMPRESSION), info.filename
        sheet = archive.read(SHEET)
    assert _deflated_size(sheet, XLSX_COMPRESSION) != _deflated_size(sheet, 6)  # zlib's default
    assert load_workbook(tmp_path / "list.xlsx", read_only=True).sheetnames == ["評価変更リスト"]


def test_empty_text_and_empty_rows_are_closed_short(tmp_path: Path) -> None:
    write_xlsx(tmp_path / "plain.xlsx", iter([["", None, "a"], [], [None, None], ["b", ""]]))
    assert (
        b'<row r="2"><c r="A2" s="1" t="inlineStr"/>'
        b'<c r="C2" s="1" t="inlineStr"><is><t>a</t></is></c></row>'
        b'<row r="3"/><row r="4"/>'
        b'<row r="5"><c r="A5" s="1" t="inlineStr"><is><t>b</t></is></c>'
        b'<c r="B5" s="1" t="inlineStr"/></row>'
    ) in _sheet(tmp_path / "plain.xlsx")


def _sheet(path: Path) -> bytes:
    """The sheet's XML without the list's ``ignoredErrors``, which openpyxl never writes
    (tests/test_import_outputs_excel.py tests it)."""
    with zipfile.ZipFile(path) as archive:
        return archive.read(SHEET).replace(IGNORED, b"")


def test_plain_rows_are_only_text_openpyxl_keeps_as_it_is() -> None:
    assert plain_row(["a", None, "", " b "]) and plain_row([])
    for value in ["x" * 32_768, "bell\x07", "\uffff", 3, 1.5, b"x"]:
        assert not plain_row(["a", value]), value
    assert plain_row(["=", "#", "x" * 32_767, "=A1", "#DIV/0!"])


@pytest.mark.parametrize("stock", [False, True])
def test_text_that_looks_like_a_formula_stays_text_in_the_xlsx(tmp_path: Path, stock: bool) -> None:
    """A 所在 or a name is data: never a formula or an error cell when staff open the list,
    in a plain row and in a row that goes openpyxl's way (a number in it)."""
    hostile = ['=HYPERLINK("http://example.invalid","x")', "#N/A", "=1+1", "+1+1", "@SUM(A1)"]
    write_xlsx(tmp_path / "list.xlsx", iter([[*hostile, *([0] if stock else [])]]))
    row = next(load_workbook(tmp_path / "list.xlsx")["評価変更リスト"].iter_rows(min_row=2))
    assert [(c.value, c.data_type) for c in row[:5]] == [(v, "s") for v in hostile]


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_text_that_looks_like_a_formula_is_quoted_in_the_csv(tmp_path: Path, encoding: str) -> None:
    cells = ["=1+1", "+81", "-2+3", "@SUM(A1)", "\t=1", "=", "-", "1-2", "a=b", 7, None]
    write_csv(tmp_path / "out.csv", ["a"], [cells], encoding)
    codec = "utf-8-sig" if encoding == "utf-8" else "cp932"
    with (tmp_path / "out.csv").open(encoding=codec, newline="") as handle:
        read = list(csv.reader(handle))
    assert read[1] == [
        "'=1+1",
        "'+81",
        "'-2+3",
        "'@SUM(A1)",
        "'\t=1",
        "=",
        "-",
        "1-2",
        "a=b",
        "7",
        "",
    ]


def test_a_row_checked_at_once_is_checked_cell_by_cell() -> None:
    rng = random.Random(1)
    pool = [*TEXTS, *OTHERS, "bell\x07", "\uffff", "x" * 20_000, "=A1"]
    rows = _random_rows(rng, 5_000, pool) + _random_rows(rng, 5_000, TEXTS)
    assert {plain_row(r) for r in rows} == {True, False}
    assert [plain_row(r) for r in rows] == [_plain_cells(r) for r in rows]


@pytest.mark.parametrize("bad", ["bell\x07", "form\x0c"])
def test_a_control_character_is_refused_as_openpyxl_refuses_it(tmp_path: Path, bad: str) -> None:
    with pytest.raises(IllegalCharacterError):
        _stock_sheet(tmp_path / "stock.xlsx", [["a", bad]])
    with pytest.raises(IllegalCharacterError):
        write_xlsx(tmp_path / "plain.xlsx", [["a"], ["a", bad]])


def test_xlsx_and_csv_from_one_pass(tmp_path: Path) -> None:
    rows = [["2024-04-08", str(n), "", f"大字{n % 3}", None, "〜"] for n in range(2_500)]
    passes = []

    def once() -> Any:
        passes.append(1)
        yield from rows

    xlsx, listing = tmp_path / "l.xlsx", tmp_path / "l.csv"
    assert write_list(xlsx, listing, once(), "cp932", sheet_rows=1_000) == 2_500
    assert len(passes) == 1
    write_csv(tmp_path / "alone.csv", LIST_COLUMNS, rows, "cp932")
    assert listing.read_bytes() == (tmp_path / "alone.csv").read_bytes()
    book = load_workbook(xlsx, read_only=True)
    assert book.sheetnames == ["評価変更リスト", "評価変更リスト2", "評価変更リスト3"]
    read = [r for s in book.worksheets for r in s.iter_rows(values_only=True)]
    book.close()
    assert [list(r) for r in read if r[0] != LIST_COLUMNS[0]] == [
        [v or None for v in r] for r in rows
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_csv_cells_are_their_text(tmp_path: Path, encoding: str) -> None:
    """As the writer did before: every cell through ``str`` (None empty), then the signs."""
    rows = _random_rows(random.Random(2), 500, [*TEXTS[:-4], *OTHERS, 0.1, -0.0, "〜−¦"])
    write_csv(tmp_path / "out.csv", ["a"], rows, encoding)
    codec = "utf-8-sig" if encoding == "utf-8" else "cp932"
    signs = str.maketrans({"\u301c": "\uff5e", "\u2212": "\uff0d", "\u00a6": "\uffe4"})
    want = tmp_path / "want.csv"
    with want.open("w", encoding=codec, errors="renkei-geta", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["a"])
        for row in rows:
            cells = ["" if c is None else str(c) for c in row]
            # text Excel would run as a formula: after an apostrophe (numbers are not text)
            cells = [
                f"'{c}" if isinstance(v, str) and len(c) > 1 and c[0] in "=+-@\t\r" else c
                for c, v in zip(cells, row, strict=True)
            ]
            if encoding == "cp932":
                cells = [c.translate(signs) for c in cells]
            writer.writerow(cells)
    assert (tmp_path / "out.csv").read_bytes() == want.read_bytes()


def test_the_cells_kept_per_column_are_bounded() -> None:
    """Memory stays flat: a column of distinct values keeps at most ``_KEPT_CELLS`` cells."""
    rows = PlainRows()
    for n in range(5_000):
        rows.row(n + 1, [str(n), "same"])
    kept = rows._tails  # what the renderer remembers
    assert 0 < len(kept[0]) <= _KEPT_CELLS and len(kept[1]) == 1


def _rows_then_failure(count: int) -> Any:
    for n in range(count):
        yield [str(n)]
    raise OSError("disk full")  # the writer stops midway (a kill, a full disk)


class _StoppedWriter(ExcelWriter):
    def save(self) -> None:
        self._archive.writestr("[Content_Types].xml", b"<Types/>")  # type: ignore[attr-defined]
        raise OSError("disk full")


def test_an_output_appears_under_its_name_only_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written under a temporary name and renamed when complete: a writer stopped midway
    leaves no file under an output's name, and none of its temporary files."""
    xlsx, listing, report = tmp_path / "l.xlsx", tmp_path / "l.csv", tmp_path / "e.csv"
    rows = [[str(n)] * len(LIST_COLUMNS) for n in range(600)]
    with monkeypatch.context() as patched:
        patched.setattr("bus.imports.outputs.ExcelWriter", _StoppedWriter)
        with pytest.raises(OSError, match="disk full"):
            write_list(xlsx, listing, rows, "utf-8", 1_048_576)
    with pytest.raises(OSError, match="disk full"):
        write_csv(report, ["a"], _rows_then_failure(600), "cp932")
    assert list(tmp_path.iterdir()) == []
    write_list(xlsx, listing, rows, "utf-8", 1_048_576)
    write_csv(report, ["a"], [["x"]], "cp932")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "l.csv", "l.xlsx"]
    book = load_workbook(xlsx, read_only=True)
    assert len(list(book["評価変更リスト"].iter_rows())) == 601
    book.close()
