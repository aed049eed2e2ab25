"""XML system documents: XPath 1.0 paths with the mapping's namespace prefixes.

Simple paths (``tn:宛名/tn:氏名``, ``tn:日付/@和暦``) are compiled to tag tuples and read with
one dictionary per element (fast); any other XPath 1.0 expression is compiled by lxml and
evaluated (read only: a path written on the way out must be simple, so the output's shape is
known).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from bus.mapping.formats import SpecError, single_record
from bus.mapping.standard import escape, escape_attr
from bus.mapping.values import FieldFailure, Source, Target, Text, Value
from bus.validation.secure_parse import secure_parse

_NAME = r"[^\W\d][\w.\-]*"
_STEP = re.compile(rf"(?:(?P<prefix>{_NAME}):)?(?P<local>{_NAME})")
_ATTR = re.compile(rf"@(?:(?P<prefix>{_NAME}):)?(?P<local>{_NAME})")


@dataclass(eq=False)
class Node:
    """An element of the system document's shape, as the mapping's paths describe it."""

    written: str  # prefix:local as in the mapping
    tag: str  # Clark name
    repeating: bool = False
    children: dict[str, Node] = field(default_factory=dict)
    attributes: dict[str, AttrKey] = field(default_factory=dict)


@dataclass(eq=False)
class AttrKey:
    node: Node
    written: str
    name: str  # Clark name of the attribute


@dataclass(eq=False)
class XPathKey:
    expression: etree.XPath


@dataclass(frozen=True, slots=True)
class SimpleKey:
    """A simple path read relative to the current element: child tags, then an attribute."""

    tags: tuple[str, ...]
    attribute: str | None


@dataclass(frozen=True, eq=False)
class GroupKey:
    node: Node
    tags: tuple[str, ...]


class XmlFormat:
    name = "xml"
    multi_record = False

    def __init__(self, root: str, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces
        self.root = Node(root, self._clark(root))

    def _clark(self, written: str) -> str:
        match = _STEP.fullmatch(written)
        if match is None:
            raise SpecError(f"{written!r} is not an element name")
        prefix = match["prefix"]
        if prefix is None:
            return match["local"]
        if prefix not in self.namespaces:
            raise SpecError(f"unknown namespace prefix {prefix!r} (declare it in namespaces)")
        return f"{{{self.namespaces[prefix]}}}{match['local']}"

    def _simple(
        self, path: str, base: Node, repeating_last: bool
    ) -> tuple[Node | AttrKey, SimpleKey] | None:
        """The node a simple path names under ``base`` (made if new) and its read key."""
        steps = path.split("/") if path not in ("", ".") else []
        if path.startswith("/") or any(s in ("", ".", "..") for s in steps):
            return None
        if not all(_STEP.fullmatch(s) or s == "text()" or _ATTR.fullmatch(s) for s in steps):
            return None
        node, tags = base, list[str]()
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            if step == "text()" or _ATTR.fullmatch(step):
                if not last:
                    return None
                if step == "text()":
                    return node, SimpleKey(tuple(tags), None)
                match = _ATTR.fullmatch(step)
                assert match is not None
                clark = self._clark(step[1:]) if match["prefix"] else match["local"]
                key = node.attributes.setdefault(clark, AttrKey(node, step, clark))
                return key, SimpleKey(tuple(tags), clark)
            tag = self._clark(step)
            tags.append(tag)
            child = node.children.get(tag)
            if child is None:
                child = node.children[tag] = Node(step, tag, repeating=last and repeating_last)
            elif last and repeating_last != child.repeating:
                raise SpecError(f"{path!r} is used both as a repeating group and as a field")
            node = child
        return node, SimpleKey(tuple(tags), None)

    def compile_path(self, path: Any, group: Any, writing: bool) -> Any:
        if not isinstance(path, str):
            raise SpecError("an XML path is an XPath 1.0 expression (text)")
        base = group.node if isinstance(group, GroupKey) else self.root
        simple = self._simple(path, base, False)
        if simple is not None:
            return simple[0] if writing else simple[1]
        if writing:
            raise SpecError(f"{path!r}: an output path must be a simple child path")
        try:
            return XPathKey(etree.XPath(path, namespaces=self.namespaces, smart_strings=False))
        except etree.XPathSyntaxError as error:
            raise SpecError(f"{path!r} is not a valid XPath 1.0 expression ({error})") from None

    def compile_group(self, spec: dict[str, Any], parent: Any, writing: bool) -> Any:
        path = spec.get("path")
        if not isinstance(path, str):
            raise SpecError("an XML group needs path: the repeating element")
        base = parent.node if isinstance(parent, GroupKey) else self.root
        simple = self._simple(path, base, True)
        if simple is None or not isinstance(simple[0], Node) or simple[0] is base:
            raise SpecError(f"{path!r}: a group path must be a simple path to an element")
        return GroupKey(simple[0], simple[1].tags)

    # --- reading -------------------------------------------------------------------------

    def read(self, data: bytes) -> Source:
        parsed = secure_parse(data)
        if parsed.root is None:
            raise FieldFailure("RK-MAP005", expected="XML", actual=parsed.findings[0].code)
        return self.source(parsed.root)

    def source(self, root: etree._Element) -> XmlSource:
        if root.tag != self.root.tag:
            raise FieldFailure(
                "RK-MAP005", expected=self.root.written, actual=etree.QName(root).localname
            )
        return XmlSource(root)

    def records(self, data: bytes) -> Iterator[tuple[int, Source | Exception]]:
        return single_record(self.read, data)

    # --- writing -------------------------------------------------------------------------

    def new_target(self) -> Target:
        return XmlTarget()

    def render(self, target: Target) -> bytes:
        assert isinstance(target, XmlTarget)
        out: list[str] = []
        declarations = "".join(
            f' xmlns:{prefix}="{escape_attr(uri)}"' for prefix, uri in self.namespaces.items()
        )
        _render(self.root, target, out, declarations)
        if not out:
            out.append(f"<{self.root.written}{declarations}/>")
        return "".join(out).encode("utf-8")


class XmlSource:
    __slots__ = ("_index", "_top", "element")

    def __init__(self, element: etree._Element) -> None:
        self.element = element
        self._index: dict[int, dict[str, etree._Element]] = {}
        self._top: dict[str, etree._Element] | None = None

    def _child(self, element: etree._Element, tag: str) -> etree._Element | None:
        index = self._index.get(id(element))
        if index is None:
            index = {}
            for child in element.iterchildren(tag=etree.Element):
                index.setdefault(child.tag, child)
            self._index[id(element)] = index
        return index.get(tag)

    def _walk(self, tags: tuple[str, ...]) -> etree._Element | None:
        element: etree._Element | None = self.element
        for tag in tags:
            assert element is not None
            element = self._child(element, tag)
            if element is None:
                return None
        return element

    def get(self, key: Any) -> Value | None:
        if key.__class__ is SimpleKey:
            tags = key.tags
            if len(tags) == 1:  # the common case: a child of the current element
                top = self._top
                if top is None:
                    top = self._top = {}
                    for child in self.element.iterchildren(tag=etree.Element):
                        top.setdefault(child.tag, child)
                element = top.get(tags[0])
            else:
                element = self._walk(tags)
            if element is None:
                return None
            if key.attribute is not None:
                return element.get(key.attribute)
            return element.text or ""
        if isinstance(key, XPathKey):
            result: Any = key.expression(self.element)
            found = (result[0] if result else None) if isinstance(result, list) else result
            if isinstance(found, etree._Element):
                return found.text or ""
            if isinstance(found, bool):
                return "true" if found else "false"
            if isinstance(found, float):
                return str(int(found)) if found.is_integer() else str(found)
            return None if found is None else str(found)
        return None

    def groups(self, key: Any) -> list[Source]:
        assert isinstance(key, GroupKey)
        parent = self._walk(key.tags[:-1])
        if parent is None:
            return []
        return [XmlSource(child) for child in parent.iterchildren(key.tags[-1])]


def _render(node: Node, target: XmlTarget, out: list[str], declarations: str = "") -> None:
    data = target.data
    attrs = "".join(
        f' {key.written[1:]}="{escape_attr(_text(data[key]))}"'
        for key in node.attributes.values()
        if key in data
    )
    start = len(out)
    out.append("")
    for child in node.children.values():
        if child.repeating:
            for member in data.get(child, ()):  # a group's members are keyed by its node
                _render(child, member, out)
        else:
            _render(child, target, out)
    text = data.get(node)
    if text is not None:
        out.append(escape(_text(text)))
    if len(out) == start + 1 and not attrs:
        del out[start:]
        return
    out[start] = f"<{node.written}{declarations}{attrs}>"
    out.append(f"</{node.written}>")


def _text(value: Value) -> str:
    return value.text if isinstance(value, Text) else value


class XmlTarget:
    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def set(self, key: Any, value: Value) -> None:
        self.data[key] = value

    def has(self, key: Any) -> bool:
        return key in self.data

    def group(self, key: Any) -> XmlTarget:
        child = XmlTarget()
        node = key.node if isinstance(key, GroupKey) else key
        self.data.setdefault(node, []).append(child)
        return child
