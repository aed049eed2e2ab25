"""YAML that remembers where each value was written (file, line, column).

The mapping loader reports every problem as ``file:line:column``; PyYAML's composed nodes carry
the marks, so the file is composed (not loaded) and turned into plain containers whose members
remember their position. Every scalar stays text (no YAML 1.1 surprises: ``off``, ``0123``).
Anchors and aliases are expanded, at most :data:`MAX_VALUES` values in all: a "billion
laughs" file (aliases of aliases) is refused in milliseconds instead of filling the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

_NULLS = frozenset({"~", "null", "Null", "NULL"})
MAX_VALUES = 100_000  # keys, values and entries after aliases: a large mapping has ~10 000
TAB_HINT = (
    "YAML の字下げは半角空白で書きます（タブは使えません）。",
    "Indent YAML with spaces, not tabs.",
)
BOMB_HINT = (
    "アンカー（&）と別名（*）で値を増やしすぎています。繰り返す部分は書き出してください。",
    "Anchors (&) and aliases (*) multiply it too far: write the repeated parts out.",
)


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class YamlSyntaxError(ValueError):
    def __init__(
        self, position: Position, message: str, hint: tuple[str, str] | None = None
    ) -> None:
        super().__init__(f"{position}: {message}")
        self.position = position
        self.problem = message
        self.hint = hint


class PStr(str):
    """A scalar with its position."""

    position: Position


class PDict(dict[str, Any]):
    """A mapping with its own position and each key's position."""

    position: Position
    key_positions: dict[str, Position]


class PList(list[Any]):
    position: Position


def position_of(value: Any, fallback: Position) -> Position:
    found = getattr(value, "position", None)
    return found if isinstance(found, Position) else fallback


def _mark(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Budget:
    """How many more values the document may expand to (aliases included)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.left = MAX_VALUES

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise YamlSyntaxError(
                _mark(self.file, node),
                f"more than {MAX_VALUES} values once aliases are expanded",
                BOMB_HINT,
            )


def _convert(file: str, node: yaml.Node, budget: _Budget) -> Any:
    budget.spend(node)
    position = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        result = PDict()
        result.position = position
        result.key_positions = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if key in result:
                raise YamlSyntaxError(_mark(file, key_node), f"duplicate key {key!r}")
            result[key] = _convert(file, value_node, budget)
            result.key_positions[key] = _mark(file, key_node)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = PList(_convert(file, child, budget) for child in node.value)
        items.position = position
        return items
    assert isinstance(node, yaml.ScalarNode)
    if node.style is None and (node.value in _NULLS or node.value == ""):
        return None
    text = PStr(node.value)
    text.position = position
    return text


def _tab_indented(text: str, line: int) -> bool:
    """Whether the line (0-based) or the one before it is indented with a tab."""
    lines = text.splitlines()[max(line - 1, 0) : line + 1]
    return any("\t" in row[: len(row) - len(row.lstrip(" \t"))] for row in lines)


def load_positioned(text: str, file: str) -> Any:
    """The document as PDict/PList/PStr (or None); raises :class:`YamlSyntaxError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 0, 0)
        hint = TAB_HINT if mark and _tab_indented(text, mark.line) else None
        raise YamlSyntaxError(where, f"YAML syntax error: {error.problem}", hint) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(Position(file, 0, 0), f"YAML error: {error}") from None
    return None if node is None else _convert(file, node, _Budget(file))
