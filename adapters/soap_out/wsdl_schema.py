"""The facets of a system's WSDL, enforced with lxml before anything is sent.

zeep serializes only the structure of a WSDL's types: it ignores ``xs:pattern``,
enumerations, lengths and digits (library-notes §2). So the SOAP Body zeep builds is validated
against the WSDL's own ``<xs:schema>`` elements, compiled by lxml, first. Each embedded schema
is served to lxml under a private ``wsdl-schema:`` address by a resolver, and imports between
them (which carry no ``schemaLocation`` in a WSDL) are pointed at those addresses; nothing is
ever fetched from the network.

lxml reaches its resolvers through libxml2's one process-wide entity loader, which every parse
sets on entry and puts back on exit. A parse on another thread that began before this compile
and ends during it puts back libxml2's own loader, which cannot read ``wsdl-schema:``; libxml2
then skips that import with a warning and the compiled schema silently lacks its elements
(about 1 compile in 7,500 with one other thread parsing, measured). So a compile counts the
documents the resolver served and is repeated until it served them all.
"""

from __future__ import annotations

import logging
from typing import Any

from lxml import etree

from bus.catalogue import XS

_SCHEME = "wsdl-schema:"
_COMPILE_ATTEMPTS = 5

log = logging.getLogger(__name__)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class _Embedded(etree.Resolver):
    def __init__(self, documents: dict[str, bytes]) -> None:
        super().__init__()
        self.documents = documents
        self.served: set[str] = set()

    def resolve(self, system_url: str, public_id: str, context: Any = None) -> Any:
        document = self.documents.get(system_url)
        if document is None:
            return None
        self.served.add(system_url)
        return self.resolve_string(document, context, base_url=system_url)


def _standalone(schema: etree._Element, inherited: dict[str | None, str]) -> etree._Element:
    """The schema as its own document, keeping the WSDL root's prefixes (QName values in
    ``type=""`` attributes use them) and pointing its imports at the embedded schemas."""
    nsmap: dict[Any, str] = dict(inherited)
    nsmap.update(schema.nsmap)
    copy = etree.Element(schema.tag, nsmap=nsmap)
    for name, value in schema.attrib.items():
        copy.set(name, value)
    for child in schema:
        copy.append(_deep_copy(child))
    for imported in copy.iterfind(f"{{{XS}}}import"):
        namespace = imported.get("namespace")
        if namespace and not imported.get("schemaLocation"):
            imported.set("schemaLocation", _SCHEME + namespace)
    return copy


def _deep_copy(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element), _PARSER)


class WsdlSchema:
    """An lxml validator for the elements a WSDL's types declare."""

    def __init__(self, wsdl: bytes) -> None:
        root = etree.fromstring(wsdl, _PARSER)
        schemas = root.findall(f"{{http://schemas.xmlsoap.org/wsdl/}}types/{{{XS}}}schema")
        inherited = dict(root.nsmap)
        documents = {
            _SCHEME + schema.get("targetNamespace", ""): etree.tostring(
                _standalone(schema, inherited)
            )
            for schema in schemas
        }
        main = etree.Element(f"{{{XS}}}schema", nsmap={"xs": XS})
        for location in documents:
            etree.SubElement(
                main,
                f"{{{XS}}}import",
                namespace=location.removeprefix(_SCHEME),
                schemaLocation=location,
            )
        self._schema = _compile(etree.tostring(main), documents)

    def problems(self, element: etree._Element) -> list[str]:
        """Every facet or structure error of ``element`` (empty when valid). Messages name the
        element and the facet; the offending value is left out (it may be personal data)."""
        if self._schema.validate(element):
            return []
        errors: Any = self._schema.error_log  # iterable; the stubs miss it
        return [_without_value(error.message) for error in errors]


def _compile(main: bytes, documents: dict[str, bytes]) -> etree.XMLSchema:
    """The schema ``main`` imports ``documents`` into, compiled with every one of them read.

    Raises ValueError when another thread's parses kept an import from being read in every
    attempt (see the module's docstring)."""
    for _ in range(_COMPILE_ATTEMPTS):
        resolver = _Embedded(documents)
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        parser.resolvers.add(resolver)
        schema = etree.XMLSchema(etree.fromstring(main, parser))
        if resolver.served == documents.keys():
            return schema
        log.info(
            "WSDL schema compiled without %d of its %d imports (another thread's parse); "
            "compiling it again",
            len(documents) - len(resolver.served),
            len(documents),
        )
    raise ValueError("the WSDL's schemas could not all be read")


def _without_value(message: str) -> str:
    """libxml2 quotes the value (``The value '…' is not accepted``): drop that part."""
    head, _, _ = message.partition(" The value ")
    return head.rstrip(": ")
