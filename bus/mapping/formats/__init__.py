"""System-side formats: how a mapping reads and writes a connected system's records.

Each format compiles the system paths of a mapping section at load time (a bad path is a
load error naming file, line and column) and then reads input into a :class:`Source` and
renders a :class:`Target` into bytes.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from bus.mapping.problems import BAD_ARGUMENT
from bus.mapping.values import FieldFailure, Source, Target


class SpecError(ValueError):
    """A section or path is wrong; the loader adds file, line and column. ``code`` is the
    kind of load error (:mod:`bus.mapping.problems`), ``key`` the unknown key(s) if any,
    ``hint`` what to write instead (Japanese, English)."""

    def __init__(
        self,
        message: str,
        code: str = BAD_ARGUMENT,
        key: str | None = None,
        hint: tuple[str, str] | None = None,
        at_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.key = key
        self.hint = hint
        self.at_key = at_key  # the section key whose value is wrong (its line is reported)


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


CP932_HINT = (
    "Windows や業務システムの「Shift_JIS」は encoding: cp932（Windows-31J、MS932）と"
    "書いてください。",
    "Write encoding: cp932 (Windows-31J, MS932) for what Windows and vendors' systems call "
    "Shift_JIS.",
)
_CP932_NAMES = frozenset({"windows-31j", "windows31j", "cp943c", "ibm-943", "ibm943", "x-sjis"})


def check_encoding(name: str, known: bool) -> None:
    """Refuse plain Shift_JIS (Python's ``shift_jis`` is JIS X 0208 alone: ① ㈱ 髙 﨑 fail
    and 0x8160 ～ becomes 〜, where every Windows system writes CP932) and, unless
    ``known`` (a registered codec), a name that is no codec."""
    try:
        canonical: str | None = codecs.lookup(name).name
    except LookupError:
        canonical = None
    if canonical == "shift_jis":
        raise SpecError(
            f"encoding {name!r} is plain Shift_JIS (JIS X 0208): ① ㈱ 髙 﨑 would not be read "
            "or written and ～ would become 〜",
            hint=CP932_HINT,
            at_key="encoding",
        )
    if canonical is None and not known:
        cp932 = name.lower().replace("_", "-") in _CP932_NAMES
        raise SpecError(
            f"unknown encoding {name!r} (no codec and no hook)",
            hint=CP932_HINT
            if cp932
            else ("encoding は cp932 や utf-8 と書いてください。", "Write e.g. cp932 or utf-8."),
            at_key="encoding",
        )
