"""Data files next to the mapping files: code tables, lookup tables and 外字 tables.

All are UTF-8 CSV under ``<mapping directory>/tables/``:

* a code table (コード変換表) has the columns ``system,standard`` (one row per code);
* a lookup table has a ``key`` column and any number of value columns;
* a 外字 table (外字変換表) has ``pua,char,alt``: the vendor's private-use code point
  (``U+E000``), the MJ/IVS character it stands for (empty when none exists) and the 代替文字.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

CODE_COLUMNS = ("system", "standard")
GAIJI_COLUMNS = ("pua", "char", "alt")


class TableError(ValueError):
    """A table file is missing or malformed; ``line`` is the CSV line (0 = the file)."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


def _rows(
    path: Path, columns: tuple[str, ...] | None
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or ())
            if columns is not None and tuple(header[: len(columns)]) != columns:
                raise TableError(path, 1, f"columns must start with {','.join(columns)}")
            rows = [(reader.line_num, row) for row in reader]
    except OSError as error:
        raise TableError(path, 0, f"cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise TableError(path, 0, f"not a UTF-8 CSV file ({error})") from None
    return header, rows


@dataclass(frozen=True, slots=True)
class CodeTable:
    """system code → standard code; ``duplicates`` are the CSV lines whose system code was
    already mapped (rules that can never apply)."""

    name: str
    forward: dict[str, str]
    duplicates: tuple[int, ...] = ()

    def reversed(self) -> dict[str, str]:
        """standard → system; for a many-to-one table the first row wins."""
        backward: dict[str, str] = {}
        for system, standard in self.forward.items():
            backward.setdefault(standard, system)
        return backward


def read_code_table(path: Path) -> CodeTable:
    _, rows = _rows(path, CODE_COLUMNS)
    forward: dict[str, str] = {}
    duplicates = []
    for line, row in rows:
        system, standard = (row.get(column) or "" for column in CODE_COLUMNS)
        if system in forward:
            duplicates.append(line)
            continue
        forward[system] = standard
    return CodeTable(path.stem, forward, tuple(duplicates))


def inline_code_table(name: str, entries: dict[str, str]) -> CodeTable:
    return CodeTable(name, {str(k): str(v) for k, v in entries.items()})


def read_lookup_table(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(value columns, key → row)."""
    header, rows = _rows(path, ("key",))
    return header[1:], {row["key"]: row for _, row in rows}


@dataclass(frozen=True, slots=True)
class GaijiEntry:
    pua: str
    char: str  # MJ/IVS character (base + selector), or "" when the standard has none
    alt: str  # 代替文字


def read_gaiji_table(path: Path) -> dict[str, GaijiEntry]:
    """PUA character → entry."""
    _, rows = _rows(path, GAIJI_COLUMNS)
    table: dict[str, GaijiEntry] = {}
    for line, row in rows:
        code = row["pua"].removeprefix("U+").removeprefix("u+")
        try:
            pua = chr(int(code, 16))
        except ValueError:
            raise TableError(path, line, f"pua must be U+XXXX, got {row['pua']!r}") from None
        if not 0xE000 <= ord(pua) <= 0xF8FF and not 0xF0000 <= ord(pua) <= 0x10FFFD:
            raise TableError(path, line, f"{row['pua']} is not a private-use code point")
        table[pua] = GaijiEntry(pua, row["char"] or "", row["alt"] or "")
    return table


def table_path(directory: Path, name: str) -> Path:
    return directory / "tables" / f"{name}.csv"
