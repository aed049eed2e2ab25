"""XML system documents: XPath 1.0 paths with the mapping's namespace prefixes.

Simple paths (``tn:宛名/tn:氏名``, ``tn:日付/@和暦``) are compiled to nodes of one shape tree
per section, and a document is read in one pass over the part of it that tree names (each
element's children once, the first element of a tag wins); any other XPath 1.0 expression is
compiled by lxml and evaluated when asked (read only: a path written on the way out must be
simple, so the output's shape is known).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from bus.mapping.formats import SpecError, single_record
from bus.mapping.problems import STRUCTURE
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
    traversed: bool = False  # repeating, and a path of the enclosing scope goes through it
    text_read: bool = False  # a path reads its text
    # for reading, set by XmlFormat.source: the children read as text only, the others, and
    # for a repeating node whose members hold only such children, one XPath per child
    leaves: dict[str, Node] = field(default_factory=dict)
    inner: dict[str, Node] = field(default_factory=dict)
    columns: tuple[tuple[Node, ...], tuple[etree.XPath, ...]] | None = None
    members: tuple[Node, etree.XPath] | None = None  # its only child: such a repeating node

    def plan(self) -> None:
        self.leaves = {
            tag: child
            for tag, child in self.children.items()
            if not (child.repeating or child.children or child.attributes)
        }
        self.inner = {tag: c for tag, c in self.children.items() if tag not in self.leaves}
        for child in self.children.values():
            child.plan()
        flat = self.repeating and not (self.traversed or self.attributes or self.inner)
        self.columns = None
        if flat and self.leaves:
            leaves = tuple(self.leaves.values())
            self.columns = leaves, tuple(_xpath(self.tag, leaf.tag) for leaf in leaves)
        self.members = None
        if len(self.children) == 1 and not (self.repeating or self.attributes):
            [child] = self.children.values()
            if child.columns is not None:
                self.members = child, _xpath(child.tag)


def _xpath(*tags: str) -> etree.XPath:
    """``a/b[1]`` (``a`` alone for one tag) for Clark tags: from the members' parent, the
    first ``b`` of every ``a`` in document order."""
    namespaces: dict[str, str] = {}
    steps = []
    for tag in tags:
        uri, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        if uri:
            prefix = next((p for p, u in namespaces.items() if u == uri), f"n{len(namespaces)}")
            namespaces[prefix] = uri
            local = f"{prefix}:{local}"
        steps.append(local)
    path = "/".join(steps) + ("[1]" if len(steps) > 1 else "")
    return etree.XPath(path, namespaces=namespaces, regexp=False)


@dataclass(eq=False)
class AttrKey:
    node: Node
    written: str
    name: str  # Clark name of the attribute


@dataclass(eq=False)
class XPathKey:
    expression: etree.XPath


@dataclass(frozen=True, eq=False)
class GroupKey:
    node: Node


class XmlFormat:
    name = "xml"
    multi_record = False

    def __init__(self, root: str, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces
        self.root = Node(root, self._clark(root))
        self._planned = False
        self._planning = threading.Lock()
        self._source: type[XmlSource] = XmlSource  # XPathXmlSource once an XPath is compiled

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

    def _simple(self, path: str, base: Node, repeating_last: bool) -> Node | AttrKey | None:
        """The node (or attribute) a simple path names under ``base``, made if new: it is
        also the path's read key (its text, or the attribute's value)."""
        steps = path.split("/") if path not in ("", ".") else []
        if path.startswith("/") or any(s in ("", ".", "..") for s in steps):
            return None
        if not all(_STEP.fullmatch(s) or s == "text()" or _ATTR.fullmatch(s) for s in steps):
            return None
        self._planned = False
        node = base
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            if step == "text()" or _ATTR.fullmatch(step):
                if not last:
                    return None
                if step == "text()":
                    return node
                match = _ATTR.fullmatch(step)
                assert match is not None
                clark = self._clark(step[1:]) if match["prefix"] else match["local"]
                return node.attributes.setdefault(clark, AttrKey(node, step, clark))
            tag = self._clark(step)
            child = node.children.get(tag)
            if child is None:
                child = node.children[tag] = Node(step, tag, repeating=last and repeating_last)
            elif last and repeating_last != child.repeating:
                raise SpecError(
                    f"{path!r} is used both as a repeating group and as a field", STRUCTURE
                )
            elif not last and child.repeating:
                child.traversed = True  # read through the group's first member
            node = child
        return node

    def compile_path(self, path: Any, group: Any, writing: bool) -> Any:
        if not isinstance(path, str):
            raise SpecError("an XML path is an XPath 1.0 expression (text)")
        base = group.node if isinstance(group, GroupKey) else self.root
        simple = self._simple(path, base, False)
        if simple is not None:
            if isinstance(simple, Node) and not writing:
                simple.text_read = True
            return simple
        if writing:
            raise SpecError(f"{path!r}: an output path must be a simple child path")
        try:
            key = XPathKey(etree.XPath(path, namespaces=self.namespaces, smart_strings=False))
        except etree.XPathSyntaxError as error:
            raise SpecError(f"{path!r} is not a valid XPath 1.0 expression ({error})") from None
        self._source = XPathXmlSource
        return key

    def compile_group(self, spec: dict[str, Any], parent: Any, writing: bool) -> Any:
        path = spec.get("path")
        if not isinstance(path, str):
            raise SpecError("an XML group needs path: the repeating element")
        base = parent.node if isinstance(parent, GroupKey) else self.root
        simple = self._simple(path, base, True)
        if not isinstance(simple, Node) or simple is base:
            raise SpecError(f"{path!r}: a group path must be a simple path to an element")
        return GroupKey(simple)

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
        if not self._planned:  # the first document: plan the shape once, for every thread
            with self._planning:
                if not self._planned:
                    self.root.plan()
                    self._planned = True
        return _read(self._source, root, self.root)

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


class XmlSource(dict[Any, Any]):
    """An element read through the section's shape tree: the text of every element and the
    value of every attribute the simple paths name, found in one pass and held in the source
    itself (keyed by :class:`Node` / :class:`AttrKey`; a repeating node holds its elements),
    so reading a value is ``dict.get``, with no Python call."""

    __slots__ = ("element",)
    element: etree._Element

    def groups(self, key: Any) -> list[Source]:
        assert isinstance(key, GroupKey)
        node = key.node
        members = dict.get(self, node, ())
        kind = type(self)
        if node.columns is not None and members:
            read = _read_columns(kind, members, node, node.columns)
            if read is not None:
                return read
        return [_read(kind, element, node) for element in members]


class XPathXmlSource(XmlSource):
    """The source of a section with XPath expressions besides simple paths: those are
    evaluated when read."""

    __slots__ = ()

    def get(self, key: Any, default: Any = None) -> Any:
        if key.__class__ is XPathKey:
            return _evaluate(key, self.element)
        return dict.get(self, key, default)


def _read(kind: type[XmlSource], element: etree._Element, node: Node) -> XmlSource:
    """``element`` read through ``node``'s shape, in one pass."""
    source = kind()
    source.element = element
    if node.text_read:
        source[node] = element.text or ""
    if node.attributes:
        for key in node.attributes.values():
            source[key] = element.get(key.name)
    if node.children:
        _gather(element, node, source)
    return source


def _read_columns(
    kind: type[XmlSource],
    members: list[etree._Element],
    node: Node,
    columns: tuple[tuple[Node, ...], tuple[etree.XPath, ...]],
) -> list[Source] | None:
    """The members read a column at a time (one XPath per child, no tag read per element):
    only when every member has each child, so the i-th result is the i-th member's."""
    parent = members[0].getparent()
    assert parent is not None  # the members were gathered from it
    leaves, paths = columns
    count = len(members)
    texts = []
    for path in paths:
        found: Any = path(parent)
        if len(found) != count:
            return None
        texts.append([element.text or "" for element in found])
    sources: list[Source] = []
    for element, row in zip(members, zip(*texts)):  # noqa: B905 - lengths checked above
        source = kind(zip(leaves, row))  # noqa: B905
        source.element = element
        if node.text_read:
            source[node] = element.text or ""
        sources.append(source)
    return sources


def _gather(element: etree._Element, node: Node, values: dict[Any, Any]) -> None:
    """The values under ``element`` that ``node``'s children name, into ``values``: for each
    child tag only the first element (as a path step reads it), for a repeating one all."""
    leaves, inner = node.leaves, node.inner
    for child in element:
        tag = child.tag  # comments and PIs have a function as tag: no match
        sub = leaves.get(tag)
        if sub is not None:
            if sub not in values:
                values[sub] = child.text or ""
            continue
        sub = inner.get(tag)
        if sub is None:
            continue
        if sub.repeating:
            members = values.get(sub)
            if members is not None:
                members.append(child)
                continue
            values[sub] = [child]
            if not sub.traversed:
                continue
        elif sub in values:
            continue
        else:
            values[sub] = (child.text or "") if sub.text_read else ""  # also: the first seen
        for key in sub.attributes.values():
            values[key] = child.get(key.name)
        if sub.members is not None:  # only a group read a column at a time: no walk
            group, path = sub.members
            values[group] = path(child)
        elif sub.children:
            _gather(child, sub, values)


def _evaluate(key: XPathKey, element: etree._Element) -> Value | None:
    result: Any = key.expression(element)
    found = (result[0] if result else None) if isinstance(result, list) else result
    if isinstance(found, etree._Element):
        return found.text or ""
    if isinstance(found, bool):
        return "true" if found else "false"
    if isinstance(found, float):
        return str(int(found)) if found.is_integer() else str(found)
    return None if found is None else str(found)


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
