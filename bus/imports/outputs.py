"""The staff outputs in ``--out``: 評価変更リスト (XLSX and CSV) and the error report (CSV).

CSV in what Japanese Excel opens correctly: UTF-8 with a BOM by default, or CP932, CRLF line
ends. In CP932, ～/〜 and −/－ take the code Excel expects and a character CP932 lacks is written
as 〓 (the 要確認 column already says why). The XLSX is written in openpyxl's write-only mode
(rows streamed to disk) and opens a new sheet before Excel's row limit.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lxml import etree
from openpyxl import Workbook
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from bus.imports.worklist import ErrorRow

LIST_COLUMNS = (
    "受付年月日", "受付番号", "不動産番号", "所在", "地番/家屋番号", "地目/種類",
    "地積/床面積", "登記の目的", "登記原因", "区分", "権利者", "持分", "照合結果", "宛名番号",
    "候補", "要確認理由",
)  # fmt: skip
ERROR_COLUMNS = ("行", "バイト位置", "項目", "コード", "メッセージ", "message")
EXCEL_ROWS = 1_048_576
ENCODINGS = {"utf-8": "utf-8-sig", "utf-8-sig": "utf-8-sig", "cp932": "cp932"}
LIST_NAME = "評価変更リスト"


def _geta(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeEncodeError)
    return "〓", error.end


codecs.register_error("renkei-geta", _geta)
_CP932_SIGNS = str.maketrans({"\u301c": "\uff5e", "\u2212": "\uff0d", "\u00a6": "\uffe4"})


class CsvOut:
    """One CSV output being written: header first, then :meth:`row` per row."""

    def __init__(self, handle: Any, header: Iterable[str], encoding: str) -> None:
        self._writer = csv.writer(handle, lineterminator="\r\n")
        self._cp932 = ENCODINGS[encoding] == "cp932"
        self._writer.writerow(header)

    def row(self, row: Iterable[Any]) -> None:
        """None is written empty, anything else as its ``str`` (what :mod:`csv` does)."""
        if self._cp932:
            row = ["" if c is None else str(c).translate(_CP932_SIGNS) for c in row]
        self._writer.writerow(row)


def write_csv(
    path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]], encoding: str
) -> int:
    count = 0
    with _open_csv(path, encoding) as handle:
        out = CsvOut(handle, header, encoding)
        for row in rows:
            out.row(row)
            count += 1
    return count


def _open_csv(path: Path, encoding: str) -> Any:
    return path.open("w", encoding=ENCODINGS[encoding], errors="renkei-geta", newline="")


def write_list(
    xlsx: Path, listing: Path, rows: Iterable[Sequence[Any]], encoding: str, sheet_rows: int
) -> int:
    """The 評価変更リスト as XLSX and CSV from one pass over ``rows``."""
    with _open_csv(listing, encoding) as handle:
        out = CsvOut(handle, LIST_COLUMNS, encoding)

        def fed() -> Iterator[Sequence[Any]]:
            for row in rows:
                out.row(row)
                yield row

        return write_xlsx(xlsx, fed(), sheet_rows)


def write_xlsx(path: Path, rows: Iterable[Sequence[Any]], sheet_rows: int = EXCEL_ROWS) -> int:
    """Rows in sheets of at most ``sheet_rows`` lines each (the header included)."""
    book = Workbook(write_only=True)
    sheet, used, sheets, count = None, sheet_rows, 0, 0
    for row in rows:
        if used >= sheet_rows:
            sheets += 1
            sheet = _add_sheet(book, LIST_NAME if sheets == 1 else f"{LIST_NAME}{sheets}")
            used = 1
        assert sheet is not None
        sheet.append(row)
        used += 1
        count += 1
    if sheet is None:
        _add_sheet(book, LIST_NAME)
    book.save(path)
    return count


def _add_sheet(book: Workbook, title: str) -> PlainRowSheet:
    sheet = PlainRowSheet(book, title)
    book._add_sheet(sheet)  # type: ignore[attr-defined]  # create_sheet, with this class
    sheet.append(LIST_COLUMNS)
    return sheet


# --- XLSX rows of plain text ----------------------------------------------------------------

_BATCH = 256  # rows parsed into XML elements at once
_WIDEST = 64  # columns of a plain row (the list has 16): a wider row goes the stock way
_CELL_HEADS = [f'<c r="{get_column_letter(n)}' for n in range(1, _WIDEST + 1)]
_XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
# what lxml would refuse in an element's text: openpyxl's ILLEGAL_CHARACTERS_RE and more
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_TEXT = 32_767


def plain_row(row: Sequence[Any]) -> bool:
    """Only text (or empty) cells that openpyxl would store as they are, as inline strings:
    no formula (``=…``), error code (``#N/A``), overlong or control-character text."""
    try:
        text = "".join(row)  # nearly every row: its text, checked at once
    except TypeError:  # None or not text in the row
        return _plain_cells(row)
    if len(row) > _WIDEST or (len(text) > _MAX_TEXT and not _plain_cells(row)):
        return False
    if "=" in text and any(v[:1] == "=" and len(v) > 1 for v in row):
        return False
    if "#" in text and any(v in ERROR_CODES for v in row):
        return False
    return _NOT_XML.search(text) is None


def _plain_cells(row: Sequence[Any]) -> bool:
    """:func:`plain_row` cell by cell."""
    if len(row) > _WIDEST:
        return False
    for value in row:
        if value is None:
            continue
        if type(value) is not str or len(value) > _MAX_TEXT:
            return False
        if (value[:1] == "=" and len(value) > 1) or value in ERROR_CODES:
            return False
    return _NOT_XML.search("".join(v for v in row if v is not None)) is None


def row_xml(number: int, row: Sequence[str | None]) -> str:
    """One row as openpyxl writes it in write-only mode (inline strings, no style)."""
    n = str(number)
    cells = [f'<row r="{n}">']
    for head, value in zip(_CELL_HEADS, row, strict=False):  # plain rows fit
        if value is None:
            continue
        if not value:
            cells.append(f'{head}{n}" t="inlineStr"/>')
            continue
        space = ' xml:space="preserve"' if value != value.strip() else ""
        text = value.translate(_XML_TEXT)
        cells.append(f'{head}{n}" t="inlineStr"><is><t{space}>{text}</t></is></c>')
    cells.append("</row>")
    return "".join(cells)


class PlainRowSheet(WriteOnlyWorksheet):
    """A write-only sheet whose rows of plain text skip openpyxl's cell objects: they are
    rendered as its XML text and parsed back by lxml in batches (an element per cell through
    ``WriteOnlyCell`` cost most of the import's XLSX time). Any other row goes the stock way."""

    def _write_rows(self) -> Generator[None, Sequence[Any], None]:
        writer = self._writer  # type: ignore[attr-defined]
        xf = writer.xf.send(True)
        with xf.element("sheetData"):
            pending: list[str] = []
            number = 1
            try:
                while True:
                    given = yield
                    row = given if isinstance(given, list | tuple) else list(given)
                    if plain_row(row):
                        pending.append(row_xml(number, row))
                        if len(pending) >= _BATCH:
                            _flush(xf, pending)
                    else:
                        _flush(xf, pending)
                        cells = self._values_to_row(row, number)  # type: ignore[attr-defined]
                        writer.write_row(xf, cells, number)
                    number += 1
            except GeneratorExit:
                _flush(xf, pending)
        writer.xf.send(None)


def _flush(xf: Any, pending: list[str]) -> None:
    if pending:
        xf.write(*etree.fromstring(f"<rows>{''.join(pending)}</rows>".encode()))
        pending.clear()


def error_cells(error: ErrorRow) -> list[Any]:
    return [error.line, error.offset, error.field, error.code, error.message_ja, error.message_en]
