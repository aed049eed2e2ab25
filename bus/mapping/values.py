"""Values moving through a translation, and the record interfaces both sides share.

A *record* is what one side holds: on the standard side keys are catalogue ids (and the names
of repeating groups), on the system side keys are compiled system paths. A value is text, or
:class:`Text` when it carries XML attributes (a ResidentDate's ``iso``/``asGiven``, a 外字's
``alt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    attrs: tuple[tuple[str, str], ...] = ()

    def attr(self, name: str) -> str | None:
        return next((value for key, value in self.attrs if key == name), None)


Value = str | Text


def text_of(value: Value | None) -> str | None:
    return value.text if isinstance(value, Text) else value


class FieldFailure(Exception):
    """One field could not be translated: a registered code and its message parameters."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


class Source(Protocol):
    """Read side of a record."""

    def get(self, key: Any) -> Value | None: ...

    def groups(self, key: Any) -> list[Source]: ...


class Target(Protocol):
    """Write side of a record: ``data`` holds its values by key (the generated section code
    writes there directly)."""

    data: dict[Any, Any]

    def set(self, key: Any, value: Value) -> None: ...

    def has(self, key: Any) -> bool: ...

    def group(self, key: Any) -> Target: ...


class DictRecord:
    """A record as a dict (the standard side, JSON and CSV): ``key → value`` and
    ``group key → [DictRecord]``."""

    __slots__ = ("data",)

    def __init__(self, data: dict[Any, Any] | None = None) -> None:
        self.data: dict[Any, Any] = {} if data is None else data

    def get(self, key: Any) -> Value | None:
        value = self.data.get(key)
        return value if isinstance(value, (str, Text)) else None

    def groups(self, key: Any) -> list[Source]:
        found = self.data.get(key)
        return list(found) if isinstance(found, list) else []

    def set(self, key: Any, value: Value) -> None:
        self.data[key] = value

    def has(self, key: Any) -> bool:
        return key in self.data

    def group(self, key: Any) -> DictRecord:
        child = DictRecord()
        self.data.setdefault(key, []).append(child)
        return child
