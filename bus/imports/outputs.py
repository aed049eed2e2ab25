"""The staff outputs in ``--out``: 評価変更リスト (XLSX and CSV) and the error report (CSV).

CSV in what Japanese Excel opens correctly: UTF-8 with a BOM by default, or CP932, CRLF line
ends. In CP932, ～/〜 and −/－ take the code Excel expects and a character CP932 lacks is written
as 〓 (the 要確認 column already says why). The XLSX is written in openpyxl's write-only mode
(rows streamed to disk) and opens a new sheet before Excel's row limit. Each output is written
under a temporary name in its folder and renamed to its own only when complete, so a run killed
while writing leaves no cut-short file under an output's name.
"""

from __future__ import annotations

import codecs
import csv
import glob
import os
import re
import tempfile
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zipfile import ZIP_DEFLATED, ZipFile

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet._writer import WorksheetWriter
from openpyxl.writer.excel import ExcelWriter
from openpyxl.xml.constants import SHEET_MAIN_NS
from openpyxl.xml.functions import Element, SubElement, xmlfile

from bus.errors import make_finding
from bus.imports.layout import ImportRefused
from bus.imports.worklist import ErrorRow

LIST_COLUMNS = (
    "受付年月日", "受付番号", "不動産番号", "所在", "地番/家屋番号", "地目/種類",
    "地積/床面積", "登記の目的", "登記原因", "区分", "権利者", "持分", "照合結果", "宛名番号",
    "候補", "要確認理由",
)  # fmt: skip
ERROR_COLUMNS = ("行", "バイト位置", "項目", "コード", "メッセージ", "message")
# Excel's widths (characters of "0" in the default font; a full-width character takes two):
# the header readable, and the usual value of each column (所在, 氏名, 候補 and 理由 longest)
LIST_WIDTHS = (12, 10, 16, 32, 15, 12, 13, 18, 12, 8, 24, 8, 10, 13, 36, 48)
EXCEL_ROWS = 1_048_576
ENCODINGS = {"utf-8": "utf-8-sig", "utf-8-sig": "utf-8-sig", "cp932": "cp932"}
LIST_NAME = "評価変更リスト"
# Excel's 文字列 format: a cell staff edit stays text (000123 is not made 123, 1-2 not a date)
TEXT_FORMAT = "@"
# zlib's level for the XLSX parts: openpyxl leaves it at 6; 3 wrote 100,000 rows in 1.5 s
# against 2.5-2.8 s, the file 12 % larger (docs/benchmarks.md, *The collector*)
XLSX_COMPRESSION = 3


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
        """None is written empty, anything else as its ``str`` (what :mod:`csv` does), text
        that Excel would run as a formula after an apostrophe (:func:`_as_text`)."""
        cells = list(row)
        try:
            joined = "\x1f".join(cells)
        except TypeError:  # None or not text in the row
            joined = None
        if joined is None or _MAYBE_FORMULA.search(joined):
            cells = [_as_text(c) for c in cells]
        if self._cp932:
            cells = ["" if c is None else str(c).translate(_CP932_SIGNS) for c in cells]
        self._writer.writerow(cells)


# text Excel takes for a formula when it opens a CSV (OWASP, "CSV injection"): a 所在 or a
# name from the 法務局's file is data, and must never run as =HYPERLINK(…) on staff's screen.
# The full-width ＝ ＋ － ＠ too: Japanese Excel reads a cell's full-width signs and digits as
# their half-width forms (１２３ becomes the number 123).
_FORMULA_HEADS = frozenset("=+-@\t\r＝＋－＠")
_MAYBE_FORMULA = re.compile("(?:^|\x1f)[-=+@\t\r＝＋－＠]")  # a row worth checking cell by cell


def _as_text(cell: Any) -> Any:
    """A text cell that starts as a formula would, kept as text by a leading apostrophe."""
    if type(cell) is str and len(cell) > 1 and cell[0] in _FORMULA_HEADS:
        return "'" + cell
    return cell


@contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to, renamed to ``path`` when the block ends
    without an exception (removed when it raises)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_csv(
    path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]], encoding: str
) -> int:
    count = 0
    with replaced(path) as temporary, _open_csv(temporary, encoding) as handle:
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
    with replaced(listing) as temporary, _open_csv(temporary, encoding) as handle:
        out = CsvOut(handle, LIST_COLUMNS, encoding)

        def fed() -> Iterator[Sequence[Any]]:
            for row in rows:
                out.row(row)
                yield row

        return write_xlsx(xlsx, fed(), sheet_rows)


def write_xlsx(path: Path, rows: Iterable[Sequence[Any]], sheet_rows: int = EXCEL_ROWS) -> int:
    """Rows in sheets of at most ``sheet_rows`` lines each (the header included)."""
    book = Workbook(write_only=True)
    try:
        count = _fill(book, rows, sheet_rows)
        with replaced(path) as temporary:
            _save(book, temporary)
    except BaseException:
        _close_sheets(book)
        raise
    return count


def _close_sheets(book: Workbook) -> None:
    """A failed write's sheets closed in order, each its rows then its stream: left to the
    garbage collector, a sheet's row writer may outlive its stream and fail noisily."""
    for sheet in book.worksheets:
        if isinstance(sheet, WriteOnlyWorksheet) and not sheet.closed:
            sheet.close()


def _fill(book: Workbook, rows: Iterable[Sequence[Any]], sheet_rows: int) -> int:
    sheet, used, sheets, count = None, sheet_rows, 0, 0
    for row in rows:
        if used >= sheet_rows:
            if sheet is not None:
                filter_rows(sheet, used)
            sheets += 1
            sheet = _add_sheet(book, LIST_NAME if sheets == 1 else f"{LIST_NAME}{sheets}")
            used = 1
        assert sheet is not None
        sheet.append(row)
        used += 1
        count += 1
    if sheet is None:
        sheet, used = _add_sheet(book, LIST_NAME), 1
    filter_rows(sheet, used)
    return count


def _save(book: Workbook, path: Path) -> None:
    """What ``Workbook.save`` does, with the archive at :data:`XLSX_COMPRESSION`."""
    book.properties.modified = datetime.now(UTC).replace(tzinfo=None)
    archive = ZipFile(path, "w", ZIP_DEFLATED, allowZip64=True, compresslevel=XLSX_COMPRESSION)
    ExcelWriter(book, archive).save()


def _add_sheet(book: Workbook, title: str) -> PlainRowSheet:
    sheet = PlainRowSheet(book, title)
    book._add_sheet(sheet)  # type: ignore[attr-defined]  # create_sheet, with this class
    lay_out(sheet)
    sheet.append(LIST_COLUMNS)
    return sheet


def lay_out(sheet: WriteOnlyWorksheet) -> None:
    """The list's column widths and its header row frozen: set before the first row, which
    writes the sheet's top (views and columns) in write-only mode."""
    columns = sheet.column_dimensions  # type: ignore[attr-defined]  # set by _setup, unstubbed
    for number, width in enumerate(LIST_WIDTHS, 1):
        columns[get_column_letter(number)].width = width
    sheet.freeze_panes = "A2"


def filter_rows(sheet: WriteOnlyWorksheet, rows: int) -> None:
    """An autofilter over the list's columns, header and ``rows - 1`` rows below it: written
    after the rows, when the sheet is closed."""
    last = f"{get_column_letter(len(LIST_COLUMNS))}{rows}"
    sheet.auto_filter.ref = f"A1:{last}"  # type: ignore[attr-defined]  # as column_dimensions


# --- XLSX rows of plain text ----------------------------------------------------------------

_BATCH = 256  # rows written at once
_WIDEST = 64  # columns of a plain row (the list has 16): a wider row goes the stock way
_CELL_HEADS = [f'<c r="{get_column_letter(n)}'.encode() for n in range(1, _WIDEST + 1)]
_KEPT_CELLS, _KEPT_TEXT = 1024, 32  # per column: cells remembered (at most), longest text kept
_XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
# what lxml would refuse in an element's text: openpyxl's ILLEGAL_CHARACTERS_RE and more
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_TEXT = 32_767


def plain_row(row: Sequence[Any]) -> bool:
    """Only text (or empty) cells that openpyxl would store as inline strings: no overlong
    or control-character text. ``=…`` and ``#N/A`` are text here too (openpyxl would make
    them a formula and an error: :meth:`PlainRowSheet._values_to_row`)."""
    try:
        text = "".join(row)  # nearly every row: its text, checked at once
    except TypeError:  # None or not text in the row
        return _plain_cells(row)
    if len(row) > _WIDEST or (len(text) > _MAX_TEXT and not _plain_cells(row)):
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
    return _NOT_XML.search("".join(v for v in row if v is not None)) is None


class PlainRows:
    """Plain rows as the sheet's bytes: what openpyxl writes in write-only mode (inline
    strings in the cell style numbered ``text_style``, none for 0) in its stream's encoding
    (ASCII, other characters as decimal references), but empty text closed short
    (``<c r="A1" s="1" t="inlineStr"/>``), as this module always wrote it. A cell's XML after
    its reference is remembered per column (bounded): most of the list's columns repeat a
    few values (大字, 地目, 照合結果 …)."""

    def __init__(self, text_style: int = 0) -> None:
        self._tails: list[dict[str, bytes]] = [{} for _ in range(_WIDEST)]
        self._style = f' s="{text_style}"' if text_style else ""

    def row(self, number: int, row: Sequence[str | None]) -> bytes:
        n = str(number).encode()
        parts: list[bytes] = []
        for head, value, tails in zip(_CELL_HEADS, row, self._tails, strict=False):
            if value is None:
                continue
            tail = tails.get(value)
            if tail is None:
                tail = _tail(value, self._style, tails)
            parts += (head, n, tail)
        if not parts:
            return b'<row r="%s"/>' % n  # closed short, as lxml wrote it for this module before
        return b'<row r="%s">%s</row>' % (n, b"".join(parts))


def _tail(value: str, style: str, kept: dict[str, bytes]) -> bytes:
    """``value``'s cell after its reference (``" s="1" t="inlineStr">…</c>``), kept when
    short."""
    if not value:
        tail = f'"{style} t="inlineStr"/>'.encode()
    else:
        space = ' xml:space="preserve"' if value != value.strip() else ""
        text = value.translate(_XML_TEXT)
        xml = f'"{style} t="inlineStr"><is><t{space}>{text}</t></is></c>'
        tail = xml.encode("ascii", "xmlcharrefreplace")
    if len(value) <= _KEPT_TEXT:
        if len(kept) >= _KEPT_CELLS:
            kept.clear()
        kept[value] = tail
    return tail


class PlainRowSheet(WriteOnlyWorksheet):
    """A write-only sheet whose rows of plain text skip openpyxl's cell objects and lxml's
    serialiser: they are rendered as the bytes openpyxl would write (ASCII, other characters
    as decimal references) and written in batches between the stream's own writes (an
    element per cell through ``WriteOnlyCell``, then parsing that XML back for the stream,
    cost most of the import's XLSX time). Any other row goes the stock way."""

    _writer: _RawRowWriter | None = None  # openpyxl's attribute, not in its stubs

    def _values_to_row(self, values: Iterable[Any], row_idx: int) -> Iterator[Any]:
        """openpyxl's cells of a row, text kept text: openpyxl makes ``=…`` a formula and
        ``#N/A`` an error, and a 所在 or a name from the 法務局's file must never run as
        ``=HYPERLINK(…)`` when staff open the list. Text is in the text format (``@``)."""
        for cell in super()._values_to_row(values, row_idx):  # type: ignore[misc]
            if cell.data_type in ("f", "e"):
                cell.data_type = "s"
            if cell.data_type == "s":
                cell.number_format = TEXT_FORMAT
            yield cell

    def text_style(self) -> int:
        """The workbook's number of the cell style in the text format, added when missing."""
        cell = WriteOnlyCell(self)
        cell.number_format = TEXT_FORMAT
        return int(cell.style_id)

    def _get_writer(self) -> None:
        if self._writer is None:
            self._writer = _RawRowWriter(self)
            self._writer.write_top()

    def _write_rows(self) -> Generator[None, Sequence[Any], None]:
        writer = self._writer
        assert writer is not None
        xf: Any = writer.xf.send(True)
        with xf.element("sheetData"):
            pending: list[bytes] = []
            plain = PlainRows(self.text_style())
            number = 1
            try:
                while True:
                    given = yield
                    row = given if isinstance(given, list | tuple) else list(given)
                    if plain_row(row):
                        pending.append(plain.row(number, row))
                        if len(pending) >= _BATCH:
                            writer.write_raw(xf, pending)
                    else:
                        writer.write_raw(xf, pending)
                        cells = self._values_to_row(row, number)
                        writer.write_row(xf, cells, number)
                    number += 1
            except GeneratorExit:
                writer.write_raw(xf, pending)
        writer.xf.send(None)


class _RawRowWriter(WorksheetWriter):
    """openpyxl's sheet writer with its XML stream on a file object this class holds, so
    that rows already serialised can be written to it between the stream's writes."""

    def get_stream(self) -> Generator[Any, Any, None]:
        """``WorksheetWriter.get_stream`` with the stream on ``self._handle``."""
        assert isinstance(self.out, str)  # the temporary file openpyxl named
        with (
            open(self.out, "wb") as self._handle,
            xmlfile(self._handle) as xf,
            xf.element("worksheet", xmlns=SHEET_MAIN_NS),
        ):
            try:
                while True:
                    given = yield
                    if given is True:
                        yield xf
                    elif given is not None:
                        xf.write(given)
            except GeneratorExit:
                pass

    def write_raw(self, xf: Any, pending: list[bytes]) -> None:
        """Rows' XML in the stream's encoding, after what the stream holds."""
        if pending:
            xf.flush()
            self._handle.write(b"".join(pending))
            pending.clear()

    def write_breaks(self) -> None:
        """openpyxl's page breaks, then what openpyxl never writes, in the schema's place
        after them: no 「数値が文字列として保存されています」 mark on the list's cells, whose
        「数値に変換する」 would drop 000123's zeros and a 不動産番号's last digits."""
        super().write_breaks()
        every_row = f"A1:{get_column_letter(len(LIST_COLUMNS))}{EXCEL_ROWS}"
        ignored = Element("ignoredErrors")  # (openpyxl's IgnoredError would drop the sqref)
        SubElement(ignored, "ignoredError", sqref=every_row, numberStoredAsText="1")
        self.xf.send(ignored)


def error_cells(error: ErrorRow) -> list[Any]:
    return [error.line, error.offset, error.field, error.code, error.message_ja, error.message_en]


class OutUnusable(ImportRefused):
    """``--out`` cannot take the outputs (RK-IO002): refused as an unreadable input is."""


class OutputUnwritable(ImportRefused):
    """An output cannot be written at the end (RK-IO003): the records stay stored, the run is
    not finished, so the same command run again writes the outputs."""


def unwritable(error: OSError) -> OutputUnwritable:
    """RK-IO003 naming the output in the way (a rename's target, else the file touched)."""
    name = error.filename2 or error.filename
    actual = f"{name}: {error.strerror or error}"
    return OutputUnwritable(make_finding("RK-IO003", path="/out", actual=actual))


def prepare_out(out: Path) -> list[Path]:
    """``--out`` made ready for the outputs — created when missing, probed with a temporary
    file — once the import is otherwise accepted and before anything is stored: at the end
    the records would be stored and the list lost. Returns the folders created here, the
    outermost first (see :func:`remove_created`); raises :class:`OutUnusable`, leaving none
    of them behind."""
    missing = [f for f in (out, *out.parents) if not f.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        remove_created(missing)
        actual = f"{out}: {error.strerror or error}"
        raise OutUnusable(make_finding("RK-IO002", path="/out", actual=actual)) from None
    return missing


def remove_created(created: Sequence[Path]) -> None:
    """The folders :func:`prepare_out` created, innermost first, those still empty (an
    import that stopped before writing its outputs leaves no empty folder behind)."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): kept as it is
            return


def remove_stale_parts(paths: Iterable[Path]) -> None:
    """Temporary files (``.<name>.<pid>.part``) of ``paths`` a killed run left: the batch's
    lock is held, so no other run is writing them."""
    for path in paths:
        for stale in path.parent.glob(glob.escape(f".{path.name}.") + "*.part"):
            stale.unlink(missing_ok=True)
