"""The staff outputs in ``--out``: 評価変更リスト (XLSX and CSV) and the error report (CSV).

CSV in what Japanese Excel opens correctly: UTF-8 with a BOM by default, or CP932, CRLF line
ends. In CP932, ～/〜 and −/－ take the code Excel expects and a character CP932 lacks is written
as 〓 (the 要確認 column already says why). The XLSX is written in openpyxl's write-only mode
(rows streamed to disk) and opens a new sheet before Excel's row limit.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from openpyxl import Workbook

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


def write_csv(
    path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]], encoding: str
) -> int:
    codec = ENCODINGS[encoding]
    count = 0
    with path.open("w", encoding=codec, errors="renkei-geta", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(header)
        for row in rows:
            cells = ["" if c is None else str(c) for c in row]
            if codec == "cp932":
                cells = [c.translate(_CP932_SIGNS) for c in cells]
            writer.writerow(cells)
            count += 1
    return count


def write_xlsx(path: Path, rows: Iterable[Iterable[Any]], sheet_rows: int = EXCEL_ROWS) -> int:
    """Rows in sheets of at most ``sheet_rows`` lines each (the header included)."""
    book = Workbook(write_only=True)
    sheet, used, sheets, count = None, sheet_rows, 0, 0
    for row in rows:
        if used >= sheet_rows:
            sheets += 1
            sheet = book.create_sheet(LIST_NAME if sheets == 1 else f"{LIST_NAME}{sheets}")
            sheet.append(list(LIST_COLUMNS))
            used = 1
        assert sheet is not None
        sheet.append(list(row))
        used += 1
        count += 1
    if sheet is None:
        book.create_sheet(LIST_NAME).append(list(LIST_COLUMNS))
    book.save(path)
    return count


def error_cells(error: ErrorRow) -> list[Any]:
    return [error.line, error.offset, error.field, error.code, error.message_ja, error.message_en]
