"""XSD validation with lxml, and the mapping of libxml2's errors to coded findings.

libxml2 reports one error per failed facet/type and the first content-model error per
parent. Each becomes a finding with one code per kind of failure (pattern, enumeration,
length, missing, unexpected, type, range, attribute); libxml2's own text only goes into
``detail``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from lxml import etree

from bus.catalogue import Catalogue, Item
from bus.errors import make_finding
from bus.masking import mask
from bus.pipeline import Finding, Severity
from bus.resources import schemas_dir
from bus.validation.budget import FindingBudget
from bus.validation.paths import ElementPaths

ROOT_SCHEMA = "renkei.xsd"
XS = "http://www.w3.org/2001/XMLSchema"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_ELEMENT = re.compile(r"Element '(\{[^}]*\}[^']+)'")
_EXPECTED = re.compile(r"Expected is (?:one of )?\( ([^)]*) \)")
_PATTERN = re.compile(r"pattern '(.*)'\.$")
_ATOMIC_TYPE = re.compile(r"atomic type '([^']+)'")

_CODE_BY_TYPE = {
    "SCHEMAV_CVC_PATTERN_VALID": "RK-XSD001",
    "SCHEMAV_CVC_ENUMERATION_VALID": "RK-XSD002",
    "SCHEMAV_CVC_LENGTH_VALID": "RK-XSD003",
    "SCHEMAV_CVC_MINLENGTH_VALID": "RK-XSD003",
    "SCHEMAV_CVC_MAXLENGTH_VALID": "RK-XSD003",
    "SCHEMAV_CVC_MININCLUSIVE_VALID": "RK-XSD007",
    "SCHEMAV_CVC_MAXINCLUSIVE_VALID": "RK-XSD007",
    "SCHEMAV_CVC_MINEXCLUSIVE_VALID": "RK-XSD007",
    "SCHEMAV_CVC_MAXEXCLUSIVE_VALID": "RK-XSD007",
    "SCHEMAV_CVC_TOTALDIGITS_VALID": "RK-XSD007",
    "SCHEMAV_CVC_FRACTIONDIGITS_VALID": "RK-XSD007",
    "SCHEMAV_CVC_COMPLEX_TYPE_3_2_1": "RK-XSD008",
    "SCHEMAV_CVC_COMPLEX_TYPE_3_2_2": "RK-XSD008",
    "SCHEMAV_CVC_COMPLEX_TYPE_4": "RK-XSD008",
}


@cache
def _schema_document() -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.parse(str(schemas_dir() / ROOT_SCHEMA), parser)


def load_schema() -> etree.XMLSchema:
    """The combined schema (envelope + standard + extension + services), freshly compiled.

    Imports resolve to local files next to ``renkei.xsd``; the parser never goes to the network.
    """
    return etree.XMLSchema(_schema_document())


class SchemaPool:
    """Compiled schemas lent to one thread at a time.

    An XMLSchema keeps the last run's error log on itself, so two threads must never validate
    with one object at once. A copy per thread (as before) cost ~1.3 MiB and ~5 ms of compile
    for every thread that ever validated, and the HTTP thread pool has up to 40; a pool
    compiles one only when every compiled one is lent out, so it holds as many as validations
    ever ran at once (bounded by the threads that validate: the batch lane's, the inquiries'
    RENKEI_INGEST_THREADS, the dispatch workers), and keeps at most ``max_idle`` of them.
    """

    def __init__(
        self, max_idle: int = 16, compile_schema: Callable[[], etree.XMLSchema] = load_schema
    ) -> None:
        self._idle: list[etree.XMLSchema] = []
        self._lock = threading.Lock()
        # libxml2 cannot compile from the one shared schema document in two threads at once
        # ("XMLSchemaParseError: Internal error: xmlSchemaPValAttrNodeValue"): one at a time
        self._compiling = threading.Lock()
        self._max_idle = max_idle
        self._compile = compile_schema
        self.compiled = 0

    @contextmanager
    def lend(self) -> Iterator[etree.XMLSchema]:
        """A schema no other thread holds until this block ends."""
        with self._lock:
            schema = self._idle.pop() if self._idle else None
        if schema is None:
            with self._compiling:
                schema = self._compile()
            with self._lock:
                self.compiled += 1
        try:
            yield schema
        finally:
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(schema)


@cache
def shared_pool() -> SchemaPool:
    """The process's one pool: every validator checks against the same combined schema."""
    return SchemaPool()


@dataclass(slots=True)
class SchemaResult:
    findings: list[Finding]
    failed: set[etree._Element]


class SchemaValidator:
    """Validates a canonical ``PlatformMessage`` tree and explains each failure."""

    def __init__(self, catalogue: Catalogue, pool: SchemaPool | None = None) -> None:
        self._catalogue = catalogue
        self._pool = pool or shared_pool()

    def validate(
        self,
        root: etree._Element,
        budget: FindingBudget | None = None,
        paths: ElementPaths | None = None,
    ) -> SchemaResult:
        """Every failure as a finding, as far as ``budget`` admits them (the rest are only
        counted in it); ``paths`` shares the element paths with the caller's other findings."""
        with self._pool.lend() as schema:
            if schema.validate(root):
                return SchemaResult([], set())
            # the error log belongs to this run only while the schema is lent to this thread
            errors = list(cast(Iterable[etree._LogEntry], schema.error_log))  # stubs lack __iter__
        budget = budget or FindingBudget()
        paths = paths or ElementPaths()
        namespaces = _document_namespaces(root)
        result = SchemaResult([], set())
        for error in errors:
            if not budget.admits(Severity.ERROR):  # every schema finding is an error
                continue
            node = _node_at(root, error.path, namespaces)
            finding = self._finding(error, node, paths)
            result.findings.append(finding)
            if node is not None and finding.code != "RK-XSD004":
                result.failed.add(node)
        return result

    def _finding(
        self, error: etree._LogEntry, node: etree._Element | None, paths: ElementPaths
    ) -> Finding:
        message = error.message
        path = paths(node) if node is not None else (error.path or "/")
        tag_match = _ELEMENT.search(message)
        tag = tag_match.group(1) if tag_match else (node.tag if node is not None else "")
        if error.type_name == "SCHEMAV_ELEMENT_CONTENT":
            if "Missing child element" in message:
                names = _expected_tags(message)
                item = self._catalogue.by_tag.get(names[0]) if names else None
                local = etree.QName(names[0]).localname if names else "?"
                return self._make(
                    "RK-XSD004", f"{path}/{local}", item, None, message, local_name=local
                )
            missing = _missing_instead(node, message)
            if missing is not None:
                parent_path = path.rsplit("/", 1)[0]
                local = etree.QName(missing).localname
                return self._make(
                    "RK-XSD004",
                    f"{parent_path}/{local}",
                    self._catalogue.by_tag.get(missing),
                    None,
                    message,
                    local_name=local,
                )
            return self._make(
                "RK-XSD005",
                path,
                self._catalogue.by_tag.get(tag),
                None,
                message,
                local_name=etree.QName(tag).localname if tag else "?",
            )
        item = self._catalogue.by_tag.get(tag)
        value = node.text if node is not None else None
        code = _CODE_BY_TYPE.get(error.type_name)
        if code is None and error.type_name.startswith("SCHEMAV_CVC_DATATYPE_VALID"):
            code = "RK-XSD008" if "attribute '" in message else "RK-XSD006"
        expected = ""
        readable: dict[str, Any] = {}
        if code == "RK-XSD001":
            pattern = _PATTERN.search(message)
            expected = pattern.group(1) if pattern else (item.pattern if item else "") or ""
        elif code == "RK-XSD006":
            atomic = _ATOMIC_TYPE.search(message)
            type_ja, type_en = readable_type(atomic.group(1) if atomic else "")
            readable = {"type_ja": type_ja, "type_en": type_en}
        return self._make(
            code or "RK-XSD099",
            path,
            item,
            value,
            _masked_detail(message, node, personal=item.personal if item else True),
            expected=expected,
            local_name=etree.QName(tag).localname if tag else "?",
            **readable,
        )

    def _make(
        self,
        code: str,
        path: str,
        item: Item | None,
        value: str | None,
        detail: str,
        *,
        local_name: str,
        expected: str = "",
        **params: Any,
    ) -> Finding:
        return make_finding(
            code,
            path=path,
            item=item.id if item else local_name,
            name_ja=item.name_ja if item else None,
            rule=item.rule if item else None,
            value_masked=mask(value, personal=item.personal if item else True)
            if value is not None
            else None,
            detail=detail,
            expected=expected,
            **params,
        )


# What a value of an XSD built-in type looks like, for RK-XSD006's message (ja, en).
_BUILTIN_TYPES: dict[str, tuple[str, str]] = {
    "date": ("年月日（YYYY-MM-DD）", "a date, YYYY-MM-DD"),
    "dateTime": ("日時（YYYY-MM-DDThh:mm:ss）", "a date and time, YYYY-MM-DDThh:mm:ss"),
    "gYear": ("西暦年（4 桁）", "a year, 4 digits"),
    "boolean": ("true または false", "true or false"),
    "decimal": ("数値", "a number"),
    "integer": ("整数", "a whole number"),
    "int": ("整数", "a whole number"),
    "long": ("整数", "a whole number"),
    "nonNegativeInteger": ("0 以上の整数", "a whole number, 0 or more"),
    "positiveInteger": ("1 以上の整数", "a whole number, 1 or more"),
    "NCName": ("英字で始まる名前（空白・コロンなし）", "a name without spaces or colons"),
    "anyURI": ("URI", "a URI"),
}
_XS_PREFIX = "xs:"
_SCHEMA_FILES = ("envelope.xsd", "standard.xsd", "extension.xsd")


@cache
def _documented_types() -> dict[str, tuple[str, str]]:
    """The ja/en documentation of every named simple type of renkei's schemas (the XSDs are
    the source of truth: ``Amount`` is 金額（円、0以上）), by Clark name."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    directory = schemas_dir()
    paths = [directory / name for name in _SCHEMA_FILES]
    paths += sorted((directory / "services").glob("*.xsd"))
    documented: dict[str, tuple[str, str]] = {}
    for path in paths:
        root = etree.parse(str(path), parser).getroot()
        namespace = root.get("targetNamespace")
        for node in root.iterfind(f"{{{XS}}}simpleType[@name]"):
            texts = {
                str(doc.get(XML_LANG)): " ".join((doc.text or "").split())
                for doc in node.iterfind(f"{{{XS}}}annotation/{{{XS}}}documentation")
            }
            if texts.get("ja") and texts.get("en"):
                documented[f"{{{namespace}}}{node.get('name')}"] = (texts["ja"], texts["en"])
    return documented


def readable_type(name: str) -> tuple[str, str]:
    """What a value of the type libxml2 names (``{urn:…}Amount``, ``xs:date``) must be, in
    Japanese and English words for RK-XSD006: the type's own documentation in the XSDs, a
    built-in's description, else the type's local name (never the raw Clark name)."""
    documented = _documented_types().get(name)
    if documented is not None:
        return documented
    local = name.rsplit("}", 1)[-1].removeprefix(_XS_PREFIX)
    if name.startswith((_XS_PREFIX, f"{{{XS}}}")) and local in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[local]
    return local or "?", local or "?"


def _masked_detail(message: str, node: etree._Element | None, *, personal: bool) -> str:
    """libxml2's text with the failing value masked like ``value_masked``: it quotes the
    element's text or an attribute's value (``The value '…' is not accepted…``), possibly
    with its white space collapsed. Without the element its values are unknown, so
    everything after the element's name is left out for a personal (or unknown) item."""
    if not personal:
        return message
    if node is None:
        named = _ELEMENT.match(message)
        return named.group(0) if named else ""
    candidates = {
        form
        for raw in (node.text or "", *(str(value) for value in node.attrib.values()))
        for form in (raw, raw.strip(), " ".join(raw.split()), _replaced_white_space(raw))
        if form
    }
    for value in sorted(candidates, key=len, reverse=True):
        message = message.replace(f"'{value}'", f"'{mask(value, personal=True)}'")
    return message


def _replaced_white_space(text: str) -> str:
    """xs:normalizedString's form: tab, line feed and carriage return become spaces."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _expected_tags(message: str) -> list[str]:
    match = _EXPECTED.search(message)
    if not match:
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


def _missing_instead(node: etree._Element | None, message: str) -> str | None:
    """libxml2 reports a required element missing mid-sequence as the *next* element being
    unexpected. When exactly one element was expected and the parent has none of it, the
    honest finding is "missing", not "unexpected"."""
    expected = _expected_tags(message)
    if node is None or len(expected) != 1:
        return None
    parent = node.getparent()
    if parent is None or parent.find(expected[0]) is not None:
        return None
    return expected[0]


def _document_namespaces(root: etree._Element) -> dict[str, str]:
    namespaces: dict[str, str] = {}
    for element in root.iter():
        for prefix, uri in element.nsmap.items():
            if prefix:
                namespaces.setdefault(prefix, uri)
    return namespaces


def _node_at(
    root: etree._Element, path: str | None, namespaces: dict[str, str]
) -> etree._Element | None:
    """The element libxml2's error path points at (it uses the document's own prefixes)."""
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path, namespaces=namespaces)
    except etree.XPathError:
        return None
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None
