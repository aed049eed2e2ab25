"""YAML that remembers where each value was written (file, line, column).

The mapping loader reports every problem as ``file:line:column``; PyYAML's composed nodes carry
the marks, so the file is composed (not loaded) and turned into plain containers whose members
remember their position. Every scalar stays text (no YAML 1.1 surprises: ``off``, ``0123``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

_NULLS = frozenset({"~", "null", "Null", "NULL"})


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class YamlSyntaxError(ValueError):
    def __init__(self, position: Position, message: str) -> None:
        super().__init__(f"{position}: {message}")
        self.position = position
        self.problem = message


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


def _convert(file: str, node: yaml.Node) -> Any:
    position = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        result = PDict()
        result.position = position
        result.key_positions = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if key in result:
                raise YamlSyntaxError(_mark(file, key_node), f"duplicate key {key!r}")
            result[key] = _convert(file, value_node)
            result.key_positions[key] = _mark(file, key_node)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = PList(_convert(file, child) for child in node.value)
        items.position = position
        return items
    assert isinstance(node, yaml.ScalarNode)
    if node.style is None and (node.value in _NULLS or node.value == ""):
        return None
    text = PStr(node.value)
    text.position = position
    return text


def load_positioned(text: str, file: str) -> Any:
    """The document as PDict/PList/PStr (or None); raises :class:`YamlSyntaxError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 0, 0)
        raise YamlSyntaxError(where, f"YAML syntax error: {error.problem}") from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(Position(file, 0, 0), f"YAML error: {error}") from None
    return None if node is None else _convert(file, node)
