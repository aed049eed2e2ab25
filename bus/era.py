"""The 元号 (Japanese era) table, read from ``schemas/codes/era.csv``.

The table is data so that the next 改元 is a one-row change. Columns:

``code``
    1-digit 年号コード as in the 既存住基システム改造仕様書 (1 明治 … 5 令和).
``name`` / ``letter`` / ``ligature`` / ``initial``
    the ways staff and vendors write the era: 平成, H, ㍻, 平.
``start``
    the first Gregorian day of the era (ISO). An era ends on the next era's start day
    *inclusive*: the change day may be written in either era (明治45年7月30日 = 大正元年7月30日).
``start_written``
    ``MM-DD`` of 元年 on which the era begins *as written*. It equals ``start``'s month-day
    except for 明治: the 改元詔書 of 明治元年9月8日 (1868-10-23) applied 明治 retroactively from
    慶応4年1月1日 (1868-01-25 Gregorian, our ``start``), and until 明治5年 dates were written in
    the lunisolar calendar, so 明治元年1月1日 is a legitimate written date.

``ligature`` and ``initial`` may be empty: a new era has no Unicode ligature until one is
encoded (㋿ came with Unicode 12.1, after 令和 began). ``letter`` is one ASCII capital.

Before a release ships the next era, an operator points ``RENKEI_ERA_TABLE`` at a copy of the
shipped table with the new row added (docs/operations.md, 改元への対応); the shipped rows must
stay as they are. Every process reads the table once, so the hub is restarted after the change.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

from bus.resources import codes_dir

#: 明治6年1月1日: Japan's first Gregorian day (明治5年12月2日 was the last lunisolar one).
#: Written 和暦 dates before it are lunisolar and have no arithmetic Gregorian equivalent.
GREGORIAN_ADOPTION = date(1873, 1, 1)

#: a copy of the era table used instead of the shipped one (the next era before its release)
ERA_TABLE_ENV = "RENKEI_ERA_TABLE"

_COLUMNS = ("code", "name", "letter", "ligature", "initial", "start", "start_written")


@dataclass(frozen=True, slots=True)
class Era:
    code: str
    name: str
    letter: str
    ligature: str
    initial: str
    start: date
    start_written: tuple[int, int]  # (month, day) of 元年 where the era begins as written

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every spelling of the era accepted in written dates (an empty column is none)."""
        spelled = (self.name, self.letter, self.letter.lower(), self.ligature, self.initial)
        return tuple(token for token in spelled if token)


def load_eras(path: Path | None = None) -> tuple[Era, ...]:
    """Read and check an era table; raises ``ValueError`` naming the file and line."""
    path = path or codes_dir() / "era.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise ValueError(f"{path}: columns must be {','.join(_COLUMNS)}")
        eras = [_row(path, reader.line_num, row) for row in reader]
    _check(path, eras)
    return tuple(eras)


def _row(path: Path, line: int, row: dict[str, str]) -> Era:
    try:
        month, day = (int(part) for part in row["start_written"].split("-"))
        era = Era(
            code=row["code"],
            name=row["name"],
            letter=row["letter"],
            ligature=row["ligature"],
            initial=row["initial"],
            start=date.fromisoformat(row["start"]),
            start_written=(month, day),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}:{line}: bad era row {row!r}: {exc}") from None
    if not (era.code.isascii() and era.code.isdigit() and len(era.letter) == 1):
        raise ValueError(f"{path}:{line}: code must be digits and letter one character")
    if not (era.letter.isascii() and era.letter.isupper() and era.name):
        raise ValueError(f"{path}:{line}: letter must be an ASCII capital and name not empty")
    if era.start_written > (era.start.month, era.start.day):
        raise ValueError(f"{path}:{line}: start_written is after start")
    return era


def _check(path: Path, eras: list[Era]) -> None:
    if not eras:
        raise ValueError(f"{path}: no eras")
    for earlier, later in itertools.pairwise(eras):
        if later.start <= earlier.start:
            raise ValueError(f"{path}: eras must be in order of start ({later.name})")
    tokens = [token for era in eras for token in {*era.tokens, era.code}]
    if len(tokens) != len(set(tokens)):
        raise ValueError(f"{path}: an era code or spelling is used twice")


def shipped_table() -> Path:
    return codes_dir() / "era.csv"


def table_path() -> Path:
    """The table in force: ``RENKEI_ERA_TABLE`` when set, else the shipped one."""
    configured = os.environ.get(ERA_TABLE_ENV, "").strip()
    return Path(configured) if configured else shipped_table()


def load_table(path: Path) -> tuple[Era, ...]:
    """The table at ``path``, which must hold the shipped eras unchanged and in order, then
    any new ones (an operator's copy can add the next era, never change a past one)."""
    table = load_eras(path)
    if path.resolve() == shipped_table().resolve():
        return table
    shipped = load_eras(shipped_table())
    if table[: len(shipped)] != shipped:
        raise ValueError(
            f"{path}: must begin with the shipped eras unchanged ({shipped_table()}); "
            "remove it once a release ships the new era"
        )
    return table


@cache
def eras() -> tuple[Era, ...]:
    """The table in force (:func:`table_path`), oldest first (read once a process)."""
    return load_table(table_path())


_DEPENDENTS: list[Callable[[], None]] = []


def on_reload(clear: Callable[[], None]) -> None:
    """Register what a module built from the table (a cache's ``cache_clear``)."""
    _DEPENDENTS.append(clear)


def reload() -> None:
    """Forget the table and everything built from it: the next use reads :func:`table_path`
    again (tests; the hub itself reads the table once and is restarted after a change)."""
    eras.cache_clear()
    _by_token.cache_clear()
    for clear in _DEPENDENTS:
        clear()


@cache
def _by_token() -> dict[str, Era]:
    return {token: era for era in eras() for token in (*era.tokens, era.code)}


def lookup(token: str) -> Era | None:
    """The era written as ``token``: name, letter (either case), ligature, initial or code."""
    return _by_token().get(token)


def next_era(era: Era) -> Era | None:
    table = eras()
    index = table.index(era)
    return table[index + 1] if index + 1 < len(table) else None


def era_on(day: date) -> Era | None:
    """The era in force on ``day`` (on a change day, the new era); None before 明治."""
    found = None
    for era in eras():
        if era.start <= day:
            found = era
    return found


def spellings(table: Iterable[Era] | None = None) -> list[str]:
    """All era spellings, longest first (for building a regex alternation)."""
    return sorted(
        {token for era in (table or eras()) for token in era.tokens}, key=len, reverse=True
    )
