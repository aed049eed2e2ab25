"""The shape of each standard service element, read from the service XSDs: which items it
holds, in which order, inside which groups (the extension block, repeating groups such as
``rightHolder`` 権利者 or ``seizure`` 差押), and which items are required.

The mapping engine writes standard messages in this order (the XSD sequences require it) and
reads them back by the same tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from lxml import etree

from bus.catalogue import NS_SERVICE, XS, load_catalogue
from bus.samplegen.content_model import ContentModel, content_model

RESIDENT_DATE = "{urn:renkei:platform:standard:1}ResidentDate"


@dataclass(slots=True)
class Leaf:
    item: str
    tag: str  # Clark name
    required: bool
    resident_date: bool


@dataclass(slots=True)
class Group:
    """A container element: the service element itself, its extension block, a repeating
    group. ``repeating`` groups map to lists of records."""

    name: str  # local name
    tag: str
    repeating: bool
    required: bool
    children: list[Leaf | Group] = field(default_factory=list)

    def leaves(self) -> list[Leaf]:
        found: list[Leaf] = []
        for child in self.children:
            found.extend([child] if isinstance(child, Leaf) else child.leaves())
        return found

    def groups(self) -> list[Group]:
        found: list[Group] = []
        for child in self.children:
            if isinstance(child, Group):
                found.append(child)
                found.extend(child.groups())
        return found


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    return f"{{{node.nsmap[prefix or None]}}}{local}"


class _Walker:
    def __init__(self, model: ContentModel) -> None:
        self.model = model
        self.by_tag = load_catalogue().by_tag

    def group(self, declaration: etree._Element, required: bool, repeating: bool) -> Group | Leaf:
        if declaration.get("ref"):
            tag = _qname(declaration, declaration.get("ref", ""))
            declaration = self.model.elements[tag]
        else:
            namespace = declaration.getroottree().getroot().get("targetNamespace")
            tag = f"{{{namespace}}}{declaration.get('name')}"
        type_name = declaration.get("type")
        type_qname = _qname(declaration, type_name) if type_name else None
        complex_type = (
            self.model.complex_types.get(type_qname)
            if type_qname
            else declaration.find(f"{{{XS}}}complexType")
        )
        if complex_type is None or complex_type.find(f"{{{XS}}}simpleContent") is not None:
            item = self.by_tag.get(tag)
            return Leaf(
                item.id if item else etree.QName(tag).localname,
                tag,
                required,
                type_qname == RESIDENT_DATE,
            )
        node = Group(etree.QName(tag).localname, tag, repeating, required)
        for particle in complex_type:
            if particle.tag in (f"{{{XS}}}sequence", f"{{{XS}}}choice"):
                self.particle(node, particle, particle.tag == f"{{{XS}}}choice", True)
        return node

    def particle(
        self, parent: Group, particle: etree._Element, in_choice: bool, parent_required: bool
    ) -> None:
        required = parent_required and not in_choice and particle.get("minOccurs", "1") != "0"
        repeating = particle.get("maxOccurs", "1") != "1"
        if particle.tag == f"{{{XS}}}element":
            node = self.group(particle, required, repeating)
            if not any(child.tag == node.tag for child in parent.children):  # choice branches
                parent.children.append(node)
        elif particle.tag in (f"{{{XS}}}sequence", f"{{{XS}}}choice"):
            choice = particle.tag == f"{{{XS}}}choice"
            for child in particle:
                if child.tag != f"{{{XS}}}annotation":
                    self.particle(parent, child, in_choice or choice, required)


@cache
def service_layout(service: str) -> Group:
    """The tree of ``service``'s element; KeyError for an unknown service."""
    model = content_model()
    declaration = model.elements[f"{{{NS_SERVICE}}}{service}"]
    node = _Walker(model).group(declaration, True, False)
    assert isinstance(node, Group)
    return node


def services() -> list[str]:
    return content_model().services()
