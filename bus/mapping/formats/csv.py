"""CSV system files: one record per line, columns named by the header row.

A repeating group (持分: several right holders in one notice) is written in one line with its
columns' values separated by the group's ``split`` character (``山田　太郎／山田　花子``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from bus.mapping.formats import SpecError, check_encoding, option
from bus.mapping.problems import STRUCTURE, WRONG_TYPE
from bus.mapping.suggest import column_hint
from bus.mapping.values import DictRecord, FieldFailure, Source, Target, Text, Value


@dataclass(eq=False)
class SplitGroup:
    separator: str
    columns: list[str] = field(default_factory=list)
    _getter: Callable[[Mapping[str, str]], Any] | None = field(default=None, init=False, repr=False)
    _getter_width: int = field(default=0, init=False, repr=False)

    def values(self, row: Mapping[str, str]) -> tuple[str, ...]:
        """The group's columns' values in ``row``, in one C call (an ``itemgetter``, made
        again if compiling has added a column since); KeyError when one is missing."""
        if self._getter is None or self._getter_width != len(self.columns):
            self._getter, self._getter_width = _tuple_getter(self.columns), len(self.columns)
        values: tuple[str, ...] = self._getter(row)
        return values


def _tuple_getter(columns: list[str]) -> Callable[[Mapping[str, str]], Any]:
    if len(columns) > 1:
        return itemgetter(*columns)
    # itemgetter of one key gives the value, not a tuple of one
    return lambda row: tuple(row[c] for c in columns)


class CsvRecord(dict[str, str]):
    """One CSV line as a record (``column → text``): a dict, so reading a value is
    ``dict.get``, with no Python call."""

    __slots__ = ()

    def groups(self, key: Any) -> list[Source]:
        assert isinstance(key, SplitGroup)
        getter = key._getter  # key.values(self) without the call, once the getter is made
        if getter is None or key._getter_width != len(key.columns):
            getter = key.values
        try:  # every column present, all text (nearly always): joined once, in C
            values = getter(self)
            joined = "".join(values)
        except (KeyError, TypeError):
            return self._groups_read_one_by_one(key)
        if key.separator in joined:
            return _split_members(self, key)
        # nothing to split (nearly always): one member, or none when all are empty (the
        # values are the columns' own: no strict check, see CsvFormat.record)
        return [CsvRecord(zip(key.columns, values))] if joined else []  # noqa: B905

    def _groups_read_one_by_one(self, key: SplitGroup) -> list[Source]:
        """:meth:`groups` for a row that lacks a column or holds a value that is not text."""
        separator, columns = key.separator, key.columns
        values = [self.get(c) or "" for c in columns]
        for value in values:
            if separator in value:
                return _split_members(self, key)
        return [CsvRecord(zip(columns, values, strict=True))] if any(values) else []


def _split_members(row: Mapping[str, str], key: SplitGroup) -> list[Source]:
    """The group's members when a column holds the separator: the i-th part of each column,
    as many as the column with the most parts, a shorter column giving ``""``."""
    columns = key.columns
    parts = [(row.get(c) or "").split(key.separator) for c in columns]
    count = max(len(p) for p in parts)
    for p in parts:
        p += [""] * (count - len(p))
    # every column has ``count`` parts (padded above): no strict check (CsvFormat.record)
    return [CsvRecord(zip(columns, member)) for member in zip(*parts)]  # noqa: B905


class CsvFormat:
    name = "csv"
    multi_record = True

    def __init__(self, section: dict[str, Any]) -> None:
        columns = section.get("columns")
        if not isinstance(columns, list) or not columns:
            raise SpecError("a CSV section needs columns: the header names in order", STRUCTURE)
        self.columns = [str(c) for c in columns]
        if len(set(self.columns)) != len(self.columns):
            raise SpecError("columns must be unique")
        self.encoding = option(section, "encoding", "utf-8")
        check_encoding(self.encoding, known=False)
        self.delimiter = option(section, "delimiter", ",")
        self.header = _flag(section, "header")
        self.line_breaks = _flag(section, "line_breaks")

    def compile_path(self, path: Any, group: Any, writing: bool) -> Any:
        if path not in self.columns:
            raise SpecError(
                f"{path!r} is not one of the columns", hint=column_hint(str(path), self.columns)
            )
        if isinstance(group, SplitGroup) and path not in group.columns:
            group.columns.append(str(path))
        return str(path)

    def compile_group(self, spec: dict[str, Any], parent: Any, writing: bool) -> Any:
        separator = spec.get("split")
        if not isinstance(separator, str) or not separator:
            raise SpecError("a CSV group needs split: the separator of its values")
        return SplitGroup(separator)

    def decode(self, data: bytes) -> str:
        try:
            return data.decode(self.encoding).removeprefix("\ufeff")
        except (UnicodeDecodeError, LookupError) as error:
            raise FieldFailure(
                "RK-MAP005", expected=f"CSV ({self.encoding})", actual=type(error).__name__
            ) from None

    def read(self, data: bytes) -> Source:
        for _, record in self.records(data):
            if isinstance(record, Exception):
                raise record
            return record
        raise FieldFailure("RK-MAP005", expected="CSV", actual="no record")

    def records(self, data: bytes) -> Iterator[tuple[int, Source | Exception]]:
        """Each data line (numbered from 1) as a record, or why it cannot be read."""
        try:
            text = self.decode(data)
        except FieldFailure as failure:
            yield 1, failure
            return
        number = 0
        for line, row in self.rows(text):
            if self.header and line == 1:
                if row != self.columns:
                    actual = ",".join(row)[:200] if isinstance(row, list) else str(row)[:200]
                    yield 1, FieldFailure("RK-MAP005", expected=self.header_text, actual=actual)
                    return
                continue
            number += 1
            if isinstance(row, csv.Error):
                yield number, FieldFailure("RK-MAP005", expected="CSV", actual=_reason(row))
                if self.line_breaks:  # the reader cannot go on past it
                    return
                continue
            yield number, self.record(row)

    @property
    def header_text(self) -> str:
        return "header " + ",".join(self.columns)

    def rows(self, text: str) -> Iterator[tuple[int, list[str] | csv.Error]]:
        """Each row with the physical line (from 1) where it starts. With ``line_breaks``
        (RFC 4180, the default) a quoted value may hold line breaks, so a quote left open
        takes in every line after it and ends the file; without, each line is read alone
        and strictly: an open quote is that line's error, and the next line is read."""
        if self.line_breaks:
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter)
            start = 1
            try:
                for row in reader:
                    yield start, row
                    start = reader.line_num + 1
            except csv.Error as error:
                yield start, error
            return
        for number, line in enumerate(io.StringIO(text, newline=""), 1):
            alone = csv.reader((line.rstrip("\r\n"),), delimiter=self.delimiter, strict=True)
            try:
                yield number, next(alone)  # an empty line: [] (a record of no fields)
            except csv.Error as error:
                yield number, error

    def record(self, fields: list[str] | Mapping[str, str]) -> Source | Exception:
        """One record from its fields (a list in column order, or column → value)."""
        if isinstance(fields, Mapping):
            return CsvRecord(fields)
        if len(fields) != len(self.columns):
            actual = str(len(fields))
            breaks = sum(f.count("\n") for f in fields)
            if breaks:  # an unclosed quote takes in the lines after it (often the whole rest)
                actual += (
                    f': a quoted value runs over {breaks} line breaks (a closing " missing?'
                    " line_breaks: false in the layout reads each line alone)"
                )
            return FieldFailure("RK-MAP005", expected=f"{len(self.columns)} columns", actual=actual)
        # the lengths are equal (checked above): a strict= keyword, True or False, would
        # only cost zip a call with keywords, which builds a dict for every record
        return CsvRecord(zip(self.columns, fields))  # noqa: B905

    def new_target(self) -> Target:
        return DictRecord()

    def render(self, target: Target) -> bytes:
        assert isinstance(target, DictRecord)
        row = {c: "" for c in self.columns}
        for key, value in target.data.items():
            if isinstance(key, SplitGroup):
                for column in key.columns:
                    row[column] = key.separator.join(_text(m.data.get(column, "")) for m in value)
            else:
                row[key] = _text(value)
        out = io.StringIO(newline="")
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator="\r\n")
        if self.header:
            writer.writerow(self.columns)
        writer.writerow([row[c] for c in self.columns])
        try:
            return out.getvalue().encode(self.encoding)
        except UnicodeEncodeError as error:
            raise FieldFailure(
                "RK-MAP007",
                expected=self.encoding,
                actual=f"U+{ord(error.object[error.start]):04X}",
            ) from None


def _reason(error: csv.Error) -> str:
    if not str(error).startswith("unexpected end of data"):
        return str(error)[:200]
    return 'a quoted value is not closed (a closing " missing?)'


def _flag(section: dict[str, Any], key: str) -> bool:
    """A yes/no option, ``true`` unless given: ``true`` or ``false`` in any case."""
    value = option(section, key, "true").lower()
    if value not in ("true", "false"):
        raise SpecError(f"{key} is true or false, not {section.get(key)!r}", WRONG_TYPE)
    return value == "true"


def _text(value: Value) -> str:
    return value.text if isinstance(value, Text) else value
