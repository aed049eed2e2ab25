"""The catalogue of data items (データ項目), read from the XSD annotations.

The XSDs under ``schemas/`` are the source of truth: every global element carrying an
``<rk:item>`` appinfo is an item. Standard and extension items make the catalogue proper
(72 + 42); header leaves are items of kind ``header`` so their findings can be named too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree

from bus.resources import schemas_dir

XS = "http://www.w3.org/2001/XMLSchema"
RK = "urn:renkei:catalogue:1"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

NS_ENVELOPE = "urn:renkei:platform:envelope:1"
NS_STANDARD = "urn:renkei:platform:standard:1"
NS_EXTENSION = "urn:renkei:platform:extension:1"
NS_SERVICE = "urn:renkei:platform:service:1"

ITEM_SCHEMA_FILES = ("envelope.xsd", "standard.xsd", "extension.xsd")
RULES = frozenset(
    {
        "lg_code",
        "my_number",
        "corporate_number",
        "atena_number",
        "resident_code",
        "kana",
        "date_birth",
        "date_event",
        "date_deadline",
        "text",
    }
)
CATALOGUE_KINDS = ("standard", "extension")
JSON_KEYS = (
    "id",
    "name_ja",
    "namespace",
    "kind",
    "xsd_type",
    "length",
    "pattern",
    "code_list",
    "unit",
    "rule",
)


@dataclass(frozen=True, slots=True)
class Item:
    """One data item: a global element of the standard, extension or envelope schema."""

    id: str
    name_ja: str
    name_en: str
    namespace: str
    kind: str
    xsd_type: str
    length: int | None
    pattern: str | None
    code_list: str | None
    unit: str | None
    rule: str
    personal: bool
    source: str

    @property
    def tag(self) -> str:
        return f"{{{self.namespace}}}{self.id}"

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in JSON_KEYS}


class CatalogueError(ValueError):
    """An XSD annotation is missing or inconsistent."""


@dataclass(frozen=True, slots=True)
class _SchemaDoc:
    path: Path
    root: etree._Element
    target_namespace: str

    def prefix_namespace(self, prefix: str | None) -> str:
        namespace = self.root.nsmap.get(prefix)
        if namespace is None:
            raise CatalogueError(f"{self.path.name}: unknown prefix {prefix!r}")
        return namespace


def _load_docs(directory: Path) -> list[_SchemaDoc]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    docs = []
    for name in ITEM_SCHEMA_FILES:
        path = directory / name
        root = etree.parse(str(path), parser).getroot()
        docs.append(_SchemaDoc(path, root, root.get("targetNamespace", "")))
    return docs


class Catalogue:
    """All items, by id and by element tag."""

    def __init__(self, items: list[Item]) -> None:
        self.items = tuple(items)
        self.by_tag = {item.tag: item for item in items}
        self.by_id = {item.id: item for item in items if item.kind in CATALOGUE_KINDS}

    def catalogue_items(self) -> Iterator[Item]:
        """Standard then extension items, in schema order (headers excluded)."""
        for kind in CATALOGUE_KINDS:
            yield from (item for item in self.items if item.kind == kind)

    def count(self, kind: str) -> int:
        return sum(1 for item in self.items if item.kind == kind)

    @classmethod
    def from_directory(cls, directory: Path) -> Catalogue:
        docs = _load_docs(directory)
        types = _TypeIndex(docs)
        items: list[Item] = []
        for doc in docs:
            for element in doc.root.iter(f"{{{XS}}}element"):
                appinfo = element.find(f"{{{XS}}}annotation/{{{XS}}}appinfo/{{{RK}}}item")
                if appinfo is None or element.get("name") is None:
                    continue
                items.append(_item(doc, element, appinfo, types))
        ids = [item.tag for item in items]
        if len(ids) != len(set(ids)):
            raise CatalogueError("duplicate item ids in the schemas")
        return cls(items)


def _documentation(element: etree._Element, lang: str) -> str:
    for doc in element.iterfind(f"{{{XS}}}annotation/{{{XS}}}documentation"):
        if doc.get(XML_LANG) == lang:
            return (doc.text or "").strip()
    return ""


def _item(
    doc: _SchemaDoc, element: etree._Element, appinfo: etree._Element, types: _TypeIndex
) -> Item:
    name = element.get("name", "")
    rule = appinfo.get("rule", "")
    if rule not in RULES:
        raise CatalogueError(f"{doc.path.name}: item {name}: unknown rule {rule!r}")
    type_name = element.get("type")
    facets = types.facets(doc, type_name) if type_name else _Facets()
    if type_name is None:
        facets = types.facets_of_anonymous(doc, element)
    return Item(
        id=name,
        name_ja=_documentation(element, "ja"),
        name_en=_documentation(element, "en"),
        namespace=doc.target_namespace,
        kind=appinfo.get("kind", ""),
        xsd_type=type_name or "(anonymous)",
        length=facets.length,
        pattern=facets.pattern,
        code_list=appinfo.get("codeList") or None,
        unit=appinfo.get("unit") or None,
        rule=rule,
        personal=appinfo.get("personal") == "true",
        source=appinfo.get("source", ""),
    )


@dataclass(slots=True)
class _Facets:
    length: int | None = None
    pattern: str | None = None


class _TypeIndex:
    """Named simple/complex types of renkei's schemas, to read an item's facets."""

    def __init__(self, docs: list[_SchemaDoc]) -> None:
        self._types: dict[str, tuple[_SchemaDoc, etree._Element]] = {}
        for doc in docs:
            for kind in ("simpleType", "complexType"):
                for node in doc.root.iterfind(f"{{{XS}}}{kind}"):
                    self._types[f"{{{doc.target_namespace}}}{node.get('name')}"] = (doc, node)

    def facets(self, doc: _SchemaDoc, qname: str) -> _Facets:
        facets = _Facets()
        self._collect(doc, qname, facets, depth=0)
        return facets

    def facets_of_anonymous(self, doc: _SchemaDoc, element: etree._Element) -> _Facets:
        facets = _Facets()
        for node in element:
            if node.tag in (f"{{{XS}}}simpleType", f"{{{XS}}}complexType"):
                self._collect_node(doc, node, facets, depth=0)
        return facets

    def _collect(self, doc: _SchemaDoc, qname: str, facets: _Facets, depth: int) -> None:
        prefix, _, local = qname.rpartition(":")
        key = f"{{{doc.prefix_namespace(prefix or None)}}}{local}"
        found = self._types.get(key)
        if found is not None and depth < 16:
            self._collect_node(found[0], found[1], facets, depth + 1)

    def _collect_node(
        self, doc: _SchemaDoc, node: etree._Element, facets: _Facets, depth: int
    ) -> None:
        for derivation in node.iter(f"{{{XS}}}restriction", f"{{{XS}}}extension"):
            for facet in derivation:
                local = etree.QName(facet).localname
                value = facet.get("value")
                if local == "pattern" and facets.pattern is None:
                    facets.pattern = value
                elif local in ("maxLength", "length", "totalDigits") and facets.length is None:
                    facets.length = int(value or 0)
            base = derivation.get("base")
            if base and not base.startswith("xs:"):
                self._collect(doc, base, facets, depth)


@cache
def load_catalogue() -> Catalogue:
    return Catalogue.from_directory(schemas_dir())
