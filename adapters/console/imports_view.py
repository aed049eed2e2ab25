"""Import batches (一括取込) as the console lists them: each batch's work file under
``<data dir>/imports/`` (bus/imports/worklist.py) read for its progress and counts, and its
error report and 評価変更リスト written as CSV for download."""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bus.imports.outputs import ERROR_COLUMNS, LIST_COLUMNS, error_cells, write_csv
from bus.imports.worklist import Worklist

RESIDENTS_FILE = "residents.sqlite"
_BATCH_NAME = re.compile(r"^[0-9a-f]{32}-[0-9]{6}$")  # <file hash prefix>-<tenant>


@dataclass(frozen=True, slots=True)
class Batch:
    name: str  # the work file's stem: the batch's id in URLs
    file_hash: str
    tenant: str
    encoding: str
    cursor_line: int
    new: int
    duplicate: int
    errors: int
    status: str
    last_commit_at: datetime | None
    file_name: str | None  # the imported file's name; None for a batch from before names


def _read(path: Path) -> Batch | None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            columns = {column[1] for column in db.execute("pragma table_info(batch)")}
            named = "file_name" if "file_name" in columns else "null"  # an older work file
            row = db.execute(
                "select file_hash, tenant, encoding, cursor_line, new, duplicate, errors, status,"
                f" last_commit_at, {named} from batch"
            ).fetchone()
    except sqlite3.Error:
        return None  # being created, or not a work file
    if row is None:
        return None
    file_hash, tenant, encoding, line, new, duplicate, errors, status, at, name = row
    when = datetime.fromisoformat(at) if at else None
    return Batch(
        path.stem, file_hash, tenant, encoding, line, new, duplicate, errors, status, when, name
    )


def list_batches(data_dir: Path, tenants: Collection[str] | None) -> list[Batch]:
    """The batches of ``tenants`` (None: all), the most recently active first."""
    folder = data_dir / "imports"
    found = [
        batch
        for path in sorted(folder.glob("*.sqlite"))
        if folder.is_dir()
        if path.name != RESIDENTS_FILE and _BATCH_NAME.fullmatch(path.stem)
        if (batch := _read(path)) is not None
        if tenants is None or batch.tenant in tenants
    ]
    return sorted(
        found,
        key=lambda b: b.last_commit_at.isoformat() if b.last_commit_at else "",
        reverse=True,
    )


def find_batch(data_dir: Path, name: str) -> Batch | None:
    if not _BATCH_NAME.fullmatch(name):
        return None
    path = data_dir / "imports" / f"{name}.sqlite"
    return _read(path) if path.is_file() else None


def batch_csv(data_dir: Path, batch: Batch, report: str) -> bytes:
    """``errors`` (エラー一覧) or ``list`` (評価変更リスト) as CSV (UTF-8 with BOM, CRLF)."""
    worklist = Worklist(
        data_dir / "imports" / f"{batch.name}.sqlite", batch.file_hash, batch.tenant, batch.encoding
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report.csv"
            if report == "errors":
                write_csv(out, ERROR_COLUMNS, map(error_cells, worklist.error_rows()), "utf-8")
            else:
                write_csv(out, LIST_COLUMNS, worklist.sorted_rows(), "utf-8")
            return out.read_bytes()
    finally:
        worklist.close()
