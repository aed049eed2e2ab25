"""The one place the CLI builds tables and writes JSON.

Tables: an identifier (message id, delivery id, correlation id, digest…) is never cut. Piped
to a file or another command (not a terminal), a table is printed at its natural width, so
every cell is whole (rich would otherwise squeeze it into 80 columns with ellipses). On a
terminal, identifier columns keep the width of their longest value and do not wrap; the other
columns wrap (folding a long word rather than cutting it) to fit what is left, and when the
identifiers alone are wider than the terminal the table is printed that wide (the terminal
folds its lines) rather than cropped.

JSON: every ``datetime`` is written as ISO 8601 with its offset; a naive one (SQLite hands
back naive UTC values) is taken as UTC.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

#: wide enough for any row the CLI prints; the table is then as wide as its widest row
_UNBOUNDED = 100_000


class CliTable(Table):
    """A rich table whose identifier columns (``ids``) are never cut or wrapped."""

    def __init__(
        self,
        *headers: str,
        ids: Iterable[str] = (),
        right: Iterable[str] = (),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._ids: set[int] = set()
        identifiers, numbers = set(ids), set(right)
        for index, header in enumerate(headers):
            identifier = header in identifiers
            self.add_column(
                header,
                justify="right" if header in numbers else "left",
                no_wrap=identifier,
                overflow="fold",  # a long word is folded onto the next line, never cut with …
            )
            if identifier:
                self._ids.add(index)

    def _hold_identifiers(self) -> None:
        """An identifier column is at least as wide as its longest value (rich shrinks the
        wrapping columns first, and would otherwise cut an identifier last of all)."""
        for index in self._ids:
            column = self.columns[index]
            widths = [_cell_width(cell) for cell in column.cells]
            column.min_width = max([cell_len(str(column.header)), *widths])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._hold_identifiers()
        yield from super().__rich_console__(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._hold_identifiers()
        return super().__rich_measure__(console, options)


def _cell_width(cell: Any) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return cell_len(str(cell))


def table(*headers: str, **options: Any) -> CliTable:
    """A table for the CLI: ``ids`` names the identifier columns, ``right`` the numeric ones;
    other options are rich's (``title``, ``show_header``…)."""
    return CliTable(*headers, **options)


def console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr)


def print_tables(*tables: Table, to: Console | None = None) -> None:
    """Print ``tables``; off a terminal each at its natural width, so nothing is cut."""
    out = to or console()
    for shown in tables:
        needed = Measurement.get(out, out.options.update(max_width=_UNBOUNDED), shown)
        # a terminal: wrap the other columns to fit, but when the identifiers alone do not
        # fit, print wider (the terminal folds the line) rather than let rich crop them
        wanted = needed.minimum if out.is_terminal else needed.maximum
        width = out.width
        out.width = max(width, wanted)
        try:
            out.print(shown)
        finally:
            out.width = width


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.isoformat()
    return str(value)


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON; datetimes as ISO 8601 with their offset."""
    return json.dumps(payload, ensure_ascii=False, indent=2, default=_plain)


def print_json(payload: Any) -> None:
    """``--json``: only this one document on stdout."""
    sys.stdout.write(json_text(payload) + "\n")
