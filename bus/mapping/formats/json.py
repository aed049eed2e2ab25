"""JSON system documents: dotted paths (``宛名.氏名``); a repeating group is an array."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bus.mapping.formats import SpecError, single_record
from bus.mapping.problems import STRUCTURE
from bus.mapping.values import DictRecord, FieldFailure, Source, Target, Text, Value

_MAX_BYTES = 10 * 1024 * 1024


def _steps(path: Any) -> tuple[str, ...]:
    if not isinstance(path, str) or not path or any(not s for s in path.split(".")):
        raise SpecError(f"{path!r} is not a dotted JSON path")
    return tuple(path.split("."))


class JsonSource:
    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _walk(self, steps: tuple[str, ...]) -> Any:
        current: Any = self.data
        for step in steps:
            if not isinstance(current, dict):
                return None
            current = current.get(step)
        return current

    def get(self, key: Any) -> Value | None:
        """The value at a path, or None when there is none; an object or array there is no
        value (RK-MAP019: the path points one level too high, e.g. ``kojin`` for
        ``kojin.shimei``). JSON has no schema, so this is known only when a document shows it."""
        found = self._walk(key)
        if found is None:
            return None
        if isinstance(found, dict):
            raise FieldFailure("RK-MAP019", actual="object")
        if isinstance(found, list):
            raise FieldFailure("RK-MAP019", actual="array")
        if isinstance(found, bool):
            return "true" if found else "false"
        return str(found)

    def groups(self, key: Any) -> list[Source]:
        found = self._walk(key)
        if not isinstance(found, list):
            return []
        return [JsonSource(member) for member in found if isinstance(member, dict)]


class JsonFormat:
    name = "json"
    multi_record = False

    def __init__(self) -> None:
        # written paths per scope (the section, or a group's members): a value cannot also
        # be an object holding other values (``lg`` and ``lg.code``)
        self._written: dict[Any, set[tuple[str, ...]]] = {}

    def _claim(self, steps: tuple[str, ...], scope: Any) -> None:
        taken = self._written.setdefault(scope, set())
        for other in taken:
            shorter, longer = sorted((steps, other), key=len)
            if shorter != longer and longer[: len(shorter)] == shorter:
                raise SpecError(
                    f"{'.'.join(shorter)!r} is written as a value and as an object "
                    f"(holding {'.'.join(longer)!r})",
                    STRUCTURE,
                )
        taken.add(steps)

    def compile_path(self, path: Any, group: Any, writing: bool) -> Any:
        steps = _steps(path)
        if writing:
            self._claim(steps, group)
        return steps

    def compile_group(self, spec: dict[str, Any], parent: Any, writing: bool) -> Any:
        steps = _steps(spec.get("path"))
        if writing:
            self._claim(steps, parent)
        return steps

    def read(self, data: bytes) -> Source:
        if len(data) > _MAX_BYTES:
            raise FieldFailure("RK-MAP005", expected="JSON", actual="too large")
        try:  # a BOM (Windows editors write one) is not part of the document
            document = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
        except json.JSONDecodeError as error:  # where: line and column
            raise FieldFailure("RK-MAP005", expected="JSON", actual=str(error)[:200]) from None
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise FieldFailure("RK-MAP005", expected="JSON", actual=type(error).__name__) from None
        if not isinstance(document, dict):
            raise FieldFailure("RK-MAP005", expected="JSON object", actual=type(document).__name__)
        return JsonSource(document)

    def records(self, data: bytes) -> Iterator[tuple[int, Source | Exception]]:
        return single_record(self.read, data)

    def new_target(self) -> Target:
        return DictRecord()

    def render(self, target: Target) -> bytes:
        assert isinstance(target, DictRecord)
        return json.dumps(_nest(target), ensure_ascii=False, separators=(",", ":")).encode()


def _nest(record: DictRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for steps, value in record.data.items():
        node = out
        for step in steps[:-1]:
            node = node.setdefault(step, {})
        if isinstance(value, list):
            node[steps[-1]] = [_nest(member) for member in value]
        else:
            node[steps[-1]] = value.text if isinstance(value, Text) else value
    return out
