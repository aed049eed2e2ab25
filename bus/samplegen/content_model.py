"""Walks the service XSDs' content models to build documents element by element.

The walker decides structure (order, optional parts, choices, repeats); a caller-supplied
``fill`` decides each leaf's value, so the same walker serves realistic samples and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lxml import etree

from bus.catalogue import NS_SERVICE, XS
from bus.resources import schemas_dir

# fill(element, type_qname): set the leaf's text/attributes; the walker has created it.
Fill = Callable[[etree._Element, str], None]
# choose(choice_particle, branches) -> the index of the branch to build.
Choose = Callable[[etree._Element, int], int]


def _parse(path: Path) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.parse(str(path), parser).getroot()


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    return f"{{{node.nsmap[prefix or None]}}}{local}"


@dataclass(frozen=True, slots=True)
class BuildOptions:
    full: bool = True  # include every optional particle
    repeats: int = 1  # occurrences of a repeating particle (capped by maxOccurs)


class ContentModel:
    """Global elements and named types of renkei's schemas, by Clark name."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or schemas_dir()
        paths = [directory / n for n in ("envelope.xsd", "standard.xsd", "extension.xsd")]
        paths += sorted((directory / "services").glob("*.xsd"))
        self.elements: dict[str, etree._Element] = {}
        self.complex_types: dict[str, etree._Element] = {}
        self.simple_types: dict[str, etree._Element] = {}
        for path in paths:
            root = _parse(path)
            namespace = root.get("targetNamespace")
            for table, kind in (
                (self.elements, "element"),
                (self.complex_types, "complexType"),
                (self.simple_types, "simpleType"),
            ):
                for node in root.iterfind(f"{{{XS}}}{kind}"):
                    table[f"{{{namespace}}}{node.get('name')}"] = node

    def services(self) -> list[str]:
        prefix = f"{{{NS_SERVICE}}}"
        return sorted(tag[len(prefix) :] for tag in self.elements if tag.startswith(prefix))

    def enumeration(self, type_qname: str) -> list[str]:
        """The enumerated values of a named type or of its nearest named ancestor."""
        current: str | None = type_qname
        while current is not None:
            node = self.simple_types.get(current)
            if node is None:
                node = self.complex_types.get(current)
            if node is None:
                return []
            values = [e.get("value", "") for e in node.iter(f"{{{XS}}}enumeration")]
            if values:
                return values
            base = next(node.iter(f"{{{XS}}}restriction", f"{{{XS}}}extension"), None)
            current = _qname(base, base.get("base", "")) if base is not None else None
        return []

    def build_service(
        self,
        parent: etree._Element,
        service: str,
        fill: Fill,
        options: BuildOptions,
        choose: Choose | None = None,
    ) -> etree._Element:
        """Append the service element, built from its content model, to ``parent``.

        Elements are made as children in place so they reuse the parent's prefixes.
        """
        builder = _Builder(self, fill, options, choose or (lambda _particle, _n: 0))
        return builder.element(self.elements[f"{{{NS_SERVICE}}}{service}"], parent)


@dataclass(slots=True)
class _Builder:
    model: ContentModel
    fill: Fill
    options: BuildOptions
    choose: Choose

    def element(self, declaration: etree._Element, parent: etree._Element) -> etree._Element:
        if declaration.get("ref"):
            tag = _qname(declaration, declaration.get("ref", ""))
            declaration = self.model.elements[tag]
        else:
            namespace = declaration.getroottree().getroot().get("targetNamespace")
            tag = f"{{{namespace}}}{declaration.get('name')}"
        element = etree.SubElement(parent, tag)
        type_name = declaration.get("type")
        if type_name is None:
            anonymous = declaration.find(f"{{{XS}}}complexType")
            if anonymous is not None:
                self.content(element, anonymous)
            return element
        type_qname = _qname(declaration, type_name)
        complex_type = self.model.complex_types.get(type_qname)
        if complex_type is not None and complex_type.find(f"{{{XS}}}simpleContent") is None:
            self.content(element, complex_type)
        else:
            self.fill(element, type_qname)
        return element

    def content(self, element: etree._Element, complex_type: etree._Element) -> None:
        for group in complex_type:
            if group.tag in (f"{{{XS}}}sequence", f"{{{XS}}}choice"):
                self.particle(element, group)

    def particle(self, parent: etree._Element, particle: etree._Element) -> None:
        minimum = int(particle.get("minOccurs", "1"))
        if minimum == 0 and not self.options.full:
            return
        maximum = particle.get("maxOccurs", "1")
        count = max(minimum, 1)
        if maximum != "1":
            count = max(count, self.options.repeats)
            if maximum != "unbounded":
                count = min(count, int(maximum))
        for _ in range(count):
            if particle.tag == f"{{{XS}}}element":
                self.element(particle, parent)
            elif particle.tag == f"{{{XS}}}sequence":
                for child in particle:
                    self.particle(parent, child)
            elif particle.tag == f"{{{XS}}}choice":
                branches = [c for c in particle if c.tag != f"{{{XS}}}annotation"]
                self.particle(parent, branches[self.choose(particle, len(branches))])


@cache
def content_model() -> ContentModel:
    return ContentModel()
