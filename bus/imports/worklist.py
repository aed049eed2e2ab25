"""A batch's own work file: its resume cursor, counts, the list rows and the record errors.

One SQLite file per (file hash, tenant) under ``<data dir>/imports/``. Every 1,000 records the
rows, errors, counts and the cursor (byte offset and line number of the next line) are
committed together, so a run killed at any point resumes after the last commit. The rows are
kept with their sort key, so the 評価変更リスト is written sorted without holding it in memory.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import Any, TextIO

from bus.errors import make_finding
from bus.imports.layout import ImportRefused

SCHEMA = """
create table if not exists batch (
  id integer primary key check (id = 1), file_hash text, tenant text, encoding text,
  cursor_offset integer, cursor_line integer, new integer, duplicate integer, errors integer,
  status text, last_commit_at text, pass_started_at text, file_name text);
create table if not exists rows (
  line integer, seq integer, oaza text, lot text, receipt text, key text, cells text);
create table if not exists errors (
  line integer, offset integer, field text, code text, message_ja text, message_en text);
"""
RUNNING, DONE = "running", "done"
_CELLS = json.JSONEncoder(ensure_ascii=False)  # one encoder for every row, not one per dumps
_UNIT = "\x1f"  # a row of text cells is stored joined by it, after it: not JSON's "["


@dataclass(slots=True)
class BatchState:
    cursor_offset: int = 0
    cursor_line: int = 1
    new: int = 0
    duplicate: int = 0
    errors: int = 0
    status: str = RUNNING
    last_commit_at: datetime | None = None
    pass_started_at: datetime | None = None  # the first run's start (a restart: a new pass)


# A list row as the work file stores it: line, seq, the sort key (大字, 地番, 受付番号), the
# notice's key, the cells (:func:`encode_cells`). A chunk's rows cross a parallel import's pipe
# as these plain tuples: pickled as ListRow objects they cost ~17 ms a chunk, as tuples ~1.5.
RowValues = tuple[int, int, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class ListRow:
    line: int
    seq: int
    sort_key: tuple[str, str, str]
    key: str  # the notice's key: a notice listed twice in one file is shown once
    cells: Sequence[Any]

    def stored(self) -> RowValues:
        """The row as :meth:`Worklist.commit` takes it."""
        oaza, lot, receipt = self.sort_key
        return (self.line, self.seq, oaza, lot, receipt, self.key, encode_cells(self.cells))


@dataclass(frozen=True, slots=True)
class ErrorRow:
    line: int
    offset: int
    field: str
    code: str
    message_ja: str
    message_en: str


class Worklist:
    def __init__(
        self,
        path: Path,
        file_hash: str,
        tenant: str,
        encoding: str,
        *,
        file_name: str | None = None,
    ) -> None:
        """``file_name``: the imported file's name, kept for the console (its last part only,
        never the folders it was in); a batch imported again under another name takes it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = _exclusive(path.with_name(path.name + ".lock"))
        self._db = sqlite3.connect(path)
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("pragma table_info(batch)")}
        if "pass_started_at" not in columns:  # a work file from before the column
            self._db.execute("alter table batch add column pass_started_at text")
        if "file_name" not in columns:  # a work file from before the column (name unknown)
            self._db.execute("alter table batch add column file_name text")
        name = PureWindowsPath(file_name).name[:255] if file_name else None  # / and \ both
        found = self._db.execute(
            "select cursor_offset, cursor_line, new, duplicate, errors, status, last_commit_at,"
            " pass_started_at from batch"
        ).fetchone()
        # resumed: a run of this batch stopped before finishing (killed, or interrupted)
        self.resumed = found is not None and found[5] == RUNNING
        if found is None:
            now = datetime.now(UTC)
            self.state = BatchState(last_commit_at=now, pass_started_at=now)
            with self._db:
                self._db.execute(
                    "insert into batch values (1, ?, ?, ?, 0, 1, 0, 0, 0, ?, ?, ?, ?)",
                    (file_hash, tenant, encoding, RUNNING, now.isoformat(), now.isoformat(), name),
                )
        else:
            if name is not None:
                with self._db:
                    self._db.execute("update batch set file_name = ?", (name,))
            offset, line, new, duplicate, errors, status = found[:6]
            commit, started = (datetime.fromisoformat(t) if t else None for t in found[6:])
            self.state = BatchState(offset, line, new, duplicate, errors, status, commit, started)

    def restart(self) -> None:
        """A finished batch imported again: a fresh pass (its records come back 重複)."""
        now = datetime.now(UTC)
        self.state = BatchState(last_commit_at=now, pass_started_at=now)
        with self._db:
            self._db.execute("delete from rows")
            self._db.execute("delete from errors")
            self._save(self.state)
        self.resumed = False

    def commit(
        self, rows: Sequence[RowValues], errors: Sequence[ErrorRow], offset: int, line: int
    ) -> None:
        """One chunk: its rows (:meth:`ListRow.stored`), errors, the counts in ``state`` and
        the next line's cursor."""
        state = self.state
        state.cursor_offset, state.cursor_line = offset, line
        state.last_commit_at = datetime.now(UTC)
        with self._db:
            self._db.executemany("insert into rows values (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany(
                "insert into errors values (?, ?, ?, ?, ?, ?)",
                [(e.line, e.offset, e.field, e.code, e.message_ja, e.message_en) for e in errors],
            )
            self._save(state)

    def finish(self) -> None:
        self.state.status = DONE
        with self._db:
            self._save(self.state)

    def _save(self, state: BatchState) -> None:
        commit, started = (
            t.isoformat() if t else None for t in (state.last_commit_at, state.pass_started_at)
        )
        self._db.execute(
            "update batch set cursor_offset = ?, cursor_line = ?, new = ?, duplicate = ?,"
            " errors = ?, status = ?, last_commit_at = ?, pass_started_at = ?",
            (
                state.cursor_offset, state.cursor_line, state.new, state.duplicate,
                state.errors, state.status, commit, started,
            ),
        )  # fmt: skip

    def committed_keys(self, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` have list rows committed. A full scan (the table has no index):
        only a resumed run asks, for the few records its stopped runs left past the cursor."""
        marks = ",".join("?" * len(keys))
        query = f"select distinct key from rows where key in ({marks})"
        return {key for (key,) in self._db.execute(query, tuple(keys))}

    def sorted_rows(self) -> Iterator[list[Any]]:
        """The rows in list order, a notice listed twice in the file only from its first line.
        The table has no index: kept up row by row, indexes cost the import more than the
        sorts of this one query (which spill to temporary files, memory stays flat)."""
        query = (
            "select cells from (select cells, oaza, lot, receipt, line, seq,"
            " min(line) over (partition by key) as first from rows)"
            " where line = first order by oaza, lot, receipt, line, seq"
        )
        for (cells,) in self._db.execute(query):
            yield decode_cells(cells)

    def error_rows(self) -> Iterator[ErrorRow]:
        query = "select * from errors order by line"
        for row in self._db.execute(query):
            yield ErrorRow(*row)

    def close(self) -> None:
        self._db.close()
        self._lock.close()  # releases the lock


def encode_cells(cells: Sequence[Any]) -> str:
    """A list row's cells as stored: text cells (nearly every row) joined by ``_UNIT`` after
    one, anything else (no cell, not text, text holding ``_UNIT``) as JSON. Per row the join
    and its split cost ~0.5 µs against ~8 µs for JSON's dump and load."""
    try:
        joined = _UNIT.join(cells)
    except TypeError:  # None or not text in the row
        return _CELLS.encode(cells)
    if not cells or joined.count(_UNIT) != len(cells) - 1:
        return _CELLS.encode(cells)
    return _UNIT + joined


def decode_cells(stored: str) -> list[Any]:
    """:func:`encode_cells` undone; a work file written as JSON only (an import begun by an
    earlier version and resumed) is read as well."""
    if stored[:1] == _UNIT:
        return stored[1:].split(_UNIT)
    return json.loads(stored)  # type: ignore[no-any-return]


def _exclusive(path: Path) -> TextIO:
    """The batch's lock, held while the import runs (released when the process dies): two
    runs of one file at once each wrote every list row into the work file (RK-IMP013)."""
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ImportRefused(make_finding("RK-IMP013", path="/import")) from None
    return handle
