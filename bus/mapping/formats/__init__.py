"""System-side formats: how a mapping reads and writes a connected system's records.

Each format compiles the system paths of a mapping section at load time (a bad path is a
load error naming file, line and column) and then reads input into a :class:`Source` and
renders a :class:`Target` into bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from bus.mapping.problems import BAD_ARGUMENT
from bus.mapping.values import FieldFailure, Source, Target


class SpecError(ValueError):
    """A section or path is wrong; the loader adds file, line and column. ``code`` is the
    kind of load error (:mod:`bus.mapping.problems`), ``key`` the unknown key(s) if any."""

    def __init__(self, message: str, code: str = BAD_ARGUMENT, key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.key = key


class SystemFormat(Protocol):
    name: str
    multi_record: bool  # CSV and fixed-width files hold many records

    def compile_path(self, path: Any, group: Any, writing: bool) -> Any:
        """The key for a system path (``group``: the enclosing group's key or None)."""

    def compile_group(self, spec: dict[str, Any], parent: Any, writing: bool) -> Any:
        """The key for a repeating group entry's system side."""

    def read(self, data: bytes) -> Source:
        """One record/document; raises FieldFailure (RK-MAP005) when it cannot be read."""

    def records(self, data: bytes) -> Iterator[tuple[int, Source | Exception]]:
        """(record number from 1, the record or why it cannot be read)."""

    def new_target(self) -> Target: ...

    def render(self, target: Target) -> bytes: ...


def single_record(
    read: Callable[[bytes], Source], data: bytes
) -> Iterator[tuple[int, Source | Exception]]:
    """The records of a one-document format (XML, JSON): the document, or why not."""
    try:
        yield 1, read(data)
    except FieldFailure as failure:
        yield 1, failure


def option(spec: dict[str, Any], key: str, default: str) -> str:
    value = spec.get(key)
    return default if value is None else str(value)
