"""The JSON form of a platform message, and its conversion to and from the platform XML.

The JSON form mirrors ``<PlatformMessage>``: an object with ``Header`` and the service
element, each keyed by element local name (the catalogue ids, e.g. ``addresseeNumber``)::

    {"Header": {"messageId": "…", "service": {"name": "AddresseeInquiry", "version": "1.0"},
                "client": {"tenant": "412066", "system": "zeimu"}, "issuedAt": "…",
                "protocolVersion": "1.0"},
     "AddresseeInquiry": {"localGovernmentCode": "412066", "addresseeNumber": "0000012345"}}

A leaf is a string; a JSON number or boolean only where the schema's type is a number or a
boolean, written with the JSON's own literal (a number cannot carry an identifier's leading
zeros); a leaf with attributes is ``{"$": text, "@iso": …, "@asGiven": "true"}``; a
repeating element is an array. Key order does not matter: children are written in the
schema's order, so the result is the same XML a system would send, and it goes through the
same pipeline (the values are not validated here; a key the schema does not know becomes an
element the XSD then refuses).

:func:`parse` reads the JSON strictly (RFC 8259): what Python's ``json`` would take silently
but other parsers read otherwise is refused: a key twice in one object, ``NaN`` and
``Infinity``, a text not in UTF-8.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_SERVICE, XS, load_catalogue
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.samplegen.content_model import ContentModel, content_model

PLATFORM_MESSAGE = f"{{{NS_ENVELOPE}}}PlatformMessage"
HEADER = f"{{{NS_ENVELOPE}}}Header"
TEXT_KEY = "$"
ATTRIBUTE_PREFIX = "@"
MAX_DEPTH = 16  # platform messages nest four levels; anything deeper is not one
_NSMAP = {
    "env": NS_ENVELOPE,
    "svc": NS_SERVICE,
    "std": "urn:renkei:platform:standard:1",
    "ext": "urn:renkei:platform:extension:1",
}


#: XSD built-in types (the end of a leaf's derivation) whose values a JSON number or boolean
#: writes faithfully; any other leaf takes only a JSON string.
NUMBER_TYPES = frozenset(
    {
        "decimal", "integer", "int", "long", "short", "byte", "nonNegativeInteger",
        "positiveInteger", "nonPositiveInteger", "negativeInteger", "unsignedLong",
        "unsignedInt", "unsignedShort", "unsignedByte", "double", "float", "gYear",
    }
)  # fmt: skip
BOOLEAN_TYPES = frozenset({"boolean"})


class JsonFormError(ValueError):
    """The JSON cannot be written as XML; ``path`` is where, as a JSON Pointer (RFC 6901):
    ``/AddresseeInquiry/name``, ``/RegistrationNotice/Extension/rightHolder/1/share`` for
    the second of a repeated element. ``reason`` and ``reason_ja`` fill the code's
    ``{actual}``; ``tag`` is the element at fault (``item`` its local name), or ``item`` the
    key at fault, when there is one."""

    def __init__(
        self,
        path: str,
        reason: str,
        reason_ja: str | None = None,
        *,
        code: str = "RK-API004",
        rule: str = "json_form",
        item: str | None = None,
        tag: str | None = None,
    ) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.reason_ja = reason_ja or reason
        self.code = code
        self.rule = rule
        self.item = etree.QName(tag).localname if tag else item
        self.tag = tag

    def finding(self) -> Finding:
        """The coded refusal: the item's Japanese name from the catalogue, the reason in
        each language (the value itself never: it may be personal)."""
        catalogue = load_catalogue()
        known = catalogue.by_tag.get(self.tag or "") or catalogue.by_id.get(self.item or "")
        name_ja = known.name_ja if known is not None else None
        fields: dict[str, Any] = {"path": self.path, "item": self.item, "rule": self.rule}
        english = make_finding(self.code, name_ja=name_ja, actual=self.reason, **fields)
        japanese = make_finding(self.code, name_ja=name_ja, actual=self.reason_ja, **fields)
        return dataclasses.replace(english, message_ja=japanese.message_ja)


class JsonNumber(str):
    """A JSON number as written: its literal, so that the XML says what the JSON said
    (``1.50`` stays ``1.50``; 10,000 digits are no ValueError)."""


class NotJsonConstant(str):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python's json reads them, RFC 8259 has none."""


class DuplicateKeys(dict[str, Any]):
    """An object in which ``duplicate`` appeared twice (Python keeps the last, silently)."""

    duplicate: str


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            marked = DuplicateKeys(pairs)
            marked.duplicate = key
            return marked
        result[key] = value
    return result


def parse(raw: bytes) -> object:
    """The JSON text of a request body, read strictly (RFC 8259): UTF-8 (a leading BOM
    ignored, §8.1), no ``NaN``/``Infinity`` (§6), numbers kept as written, and a key twice
    in one object refused wherever it is (its path)."""
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise JsonFormError(
            "/",
            f"not UTF-8 at byte {error.start}; JSON is UTF-8 (RFC 8259 §8.1)",
            f"{error.start} バイト目が UTF-8 ではありません。JSON は UTF-8 で送ってください",
            rule="json_utf8",
        ) from error
    try:
        data = json.loads(
            text,
            parse_int=JsonNumber,
            parse_float=JsonNumber,
            parse_constant=NotJsonConstant,
            object_pairs_hook=_object_pairs,
        )
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise JsonFormError(
            "/",
            f"not JSON: {error.msg} at {where}",
            f"JSON として読めません（{error.lineno} 行 {error.colno} 桁目: {error.msg}）",
            rule="json_syntax",
        ) from error
    _refuse_duplicates(data, "")
    return data


def _refuse_duplicates(value: object, path: str) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_duplicates(item, f"{path}/{index}")
    elif isinstance(value, dict):
        if isinstance(value, DuplicateKeys):
            key = value.duplicate
            raise JsonFormError(
                f"{path}/{pointer_token(key)}",
                printable(key)[:64],
                code="RK-API015",
                rule="json_duplicate_key",
                item=printable(key)[:64],
            )
        for key, item in value.items():
            _refuse_duplicates(item, f"{path}/{pointer_token(key)}")


@dataclass(frozen=True, slots=True)
class Node:
    """An element as a child of its parent's content model."""

    tag: str  # Clark name
    position: int  # first appearance in the parent's content model
    repeats: bool  # maxOccurs > 1 on the element or an enclosing particle
    children: dict[str, Node]  # by local name; empty for a leaf
    text_type: str = ""  # a leaf's XSD built-in type (e.g. "string", "decimal"); "" unknown


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    return f"{{{node.nsmap[prefix or None]}}}{local}"


class ChildTable:
    """The element tree the XSDs allow under ``PlatformMessage``: for each element, its
    possible children by local name. Local elements are per parent (several services have
    an ``Extension`` of their own), so the table is a tree, not a map by tag."""

    def __init__(self, model: ContentModel) -> None:
        self._model = model
        self._by_content: dict[etree._Element, dict[str, Node]] = {}
        names = ["Header", *model.services()]
        tags = [HEADER, *(f"{{{NS_SERVICE}}}{name}" for name in model.services())]
        self.root: dict[str, Node] = {
            name: Node(tag, i, False, self._children(model.elements[tag]))
            for i, (name, tag) in enumerate(zip(names, tags, strict=True))
        }

    def _children(self, declaration: etree._Element) -> dict[str, Node]:
        content = self._content(declaration)
        if content is None:
            return {}
        known = self._by_content.get(content)
        if known is None:
            known = self._by_content[content] = {}
            self._particles(content, known, repeats=False)
        return known

    def _content(self, declaration: etree._Element) -> etree._Element | None:
        """The complex type with element content, or None for a leaf."""
        type_name = declaration.get("type")
        if type_name is None:
            return declaration.find(f"{{{XS}}}complexType")
        complex_type = self._model.complex_types.get(_qname(declaration, type_name))
        if complex_type is None or complex_type.find(f"{{{XS}}}simpleContent") is not None:
            return None
        return complex_type

    def _particles(self, node: etree._Element, table: dict[str, Node], *, repeats: bool) -> None:
        for particle in node:
            if particle.tag not in (f"{{{XS}}}element", f"{{{XS}}}sequence", f"{{{XS}}}choice"):
                continue
            many = repeats or particle.get("maxOccurs", "1") != "1"
            if particle.tag != f"{{{XS}}}element":
                self._particles(particle, table, repeats=many)
                continue
            if particle.get("ref"):
                tag = _qname(particle, particle.get("ref", ""))
                declaration = self._model.elements[tag]
            else:
                namespace = particle.getroottree().getroot().get("targetNamespace")
                tag, declaration = f"{{{namespace}}}{particle.get('name')}", particle
            local = etree.QName(tag).localname
            known = table.get(local)
            if known is None:
                children = self._children(declaration)
                text_type = "" if children else self._text_type(declaration)
                table[local] = Node(tag, len(table), many, children, text_type)
            elif many and not known.repeats:
                table[local] = dataclasses.replace(known, repeats=True)

    def _text_type(self, declaration: etree._Element) -> str:
        """The XSD built-in type a leaf's text derives from: its type's restriction (or a
        simple content's extension) followed to ``xs:``; "" when it cannot be followed."""
        node, type_name = declaration, declaration.get("type")
        for _ in range(MAX_DEPTH):
            if type_name is None:
                derivation = next(node.iter(f"{{{XS}}}restriction", f"{{{XS}}}extension"), None)
            else:
                qname = etree.QName(_qname(node, type_name))
                if qname.namespace == XS:
                    return qname.localname
                found = self._model.simple_types.get(qname.text)
                found = found if found is not None else self._model.complex_types.get(qname.text)
                if found is None:
                    return ""
                derivation = next(found.iter(f"{{{XS}}}restriction", f"{{{XS}}}extension"), None)
            if derivation is None:
                return ""
            node, type_name = derivation, derivation.get("base")
        return ""


@cache
def child_table() -> ChildTable:
    return ChildTable(content_model())


# --- JSON → XML --------------------------------------------------------------------------


def to_xml(data: object) -> bytes:
    """The platform XML for a JSON form (as :func:`parse` reads it, or plain Python values);
    :class:`JsonFormError` when it cannot be written."""
    if not isinstance(data, dict):
        raise JsonFormError(
            "/",
            "a JSON object with Header and the service element is needed",
            "Header とサービスの要素をもつ JSON のオブジェクトが必要です",
        )
    root = etree.Element(PLATFORM_MESSAGE, nsmap=_NSMAP)
    _fill(root, data, child_table().root, "", 1)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _fill(
    element: etree._Element, data: dict[str, Any], table: dict[str, Node], path: str, depth: int
) -> None:
    """Children in schema order; a key the schema does not know goes last, in the parent's
    namespace, for the XSD to refuse."""
    if depth > MAX_DEPTH:
        raise JsonFormError(
            path or "/",
            f"nested deeper than {MAX_DEPTH} levels",
            f"入れ子が {MAX_DEPTH} 段より深くなっています",
        )
    namespace = etree.QName(element).namespace or NS_SERVICE
    entries: list[tuple[int, Node, str, object]] = []
    for key, value in data.items():
        node = table.get(key) or Node(f"{{{namespace}}}{key}", len(table), True, {})
        entries.append((node.position, node, key, value))
    for _, node, key, value in sorted(entries, key=lambda entry: entry[0]):
        child_path = f"{path}/{pointer_token(key)}"
        if not isinstance(value, list):
            if value is not None:
                _element(element, node, value, child_path, depth + 1)
            continue
        for index, item in enumerate(value):
            if isinstance(item, list):  # the field's value is what cannot be written
                raise JsonFormError(
                    child_path, "an array inside an array", "配列の中に配列があります"
                )
            if item is not None:  # an item's own path: which of the repeats is at fault
                _element(element, node, item, f"{child_path}/{index}", depth + 1)


def _element(parent: etree._Element, node: Node, value: object, path: str, depth: int) -> None:
    try:
        element = etree.SubElement(parent, node.tag)
    except ValueError as error:
        raise JsonFormError(path, "not an XML element name", "XML の要素名になりません") from error
    if isinstance(value, dict):
        if TEXT_KEY in value or any(str(k).startswith(ATTRIBUTE_PREFIX) for k in value):
            _leaf_with_attributes(element, node, value, path)
        else:
            _fill(element, value, node.children, path, depth)
        return
    _set_text(element, node, value, path)


def pointer_token(key: str) -> str:
    """``key`` as one step of a JSON Pointer (RFC 6901): ``~`` and ``/`` escaped, and a lone
    surrogate as ``\\ud800`` (it has no UTF-8, so no answer could carry it)."""
    return printable(key).replace("~", "~0").replace("/", "~1")


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _leaf_with_attributes(
    element: etree._Element, node: Node, value: dict[str, Any], path: str
) -> None:
    for key, item in value.items():
        key_path = f"{path}/{pointer_token(key)}"
        if key == TEXT_KEY:
            _set_text(element, node, item, path)
        elif key.startswith(ATTRIBUTE_PREFIX):
            text = _scalar(item, key_path, node.tag, "")
            try:
                element.set(key[1:], text)
            except ValueError as error:
                raise _unwritable(
                    key_path, text, "not an XML attribute", "XML の属性になりません", node.tag
                ) from error
        else:
            raise JsonFormError(
                key_path,
                "a leaf with attributes has only $ and @ keys",
                "属性のある項目のキーは $ と @ で始まるものだけです",
            )


def _set_text(element: etree._Element, node: Node, value: object, path: str) -> None:
    text = _scalar(value, path, node.tag, node.text_type)
    try:
        element.text = text
    except ValueError as error:
        raise _unwritable(path, text, "", "", node.tag) from error


def _unwritable(
    path: str, text: str, reason: str, reason_ja: str, tag: str | None = None
) -> JsonFormError:
    """XML 1.0 cannot hold ``text``: the first character it cannot hold, by code point."""
    bad = next((c for c in text if not _xml_char(c)), None)
    if bad is None:
        return JsonFormError(path, reason, reason_ja, tag=tag)
    point = f"U+{ord(bad):04X}"
    return JsonFormError(
        path,
        f"{point}, a character XML cannot hold",
        f"XML に書けない文字 {point} があります",
        rule="xml_characters",
        tag=tag,
    )


def _xml_char(char: str) -> bool:
    """XML 1.0 §2.2 Char."""
    point = ord(char)
    return (
        point in (0x9, 0xA, 0xD)
        or 0x20 <= point <= 0xD7FF
        or 0xE000 <= point <= 0xFFFD
        or 0x10000 <= point <= 0x10FFFF
    )


def _scalar(value: object, path: str, tag: str, text_type: str) -> str:
    """The text of a leaf. A JSON number or boolean only where the leaf's type is one
    (``text_type`` "" for an attribute or an element the schema does not know: written as
    is, for the XSD to judge)."""
    if isinstance(value, float) and not math.isfinite(value):  # plain Python values
        value = NotJsonConstant(value)
    if isinstance(value, NotJsonConstant):
        raise JsonFormError(
            path,
            f"{value} is not a JSON number (RFC 8259 §6)",
            f"{value} は JSON の数値ではありません（RFC 8259 §6）",
            rule="json_syntax",
            tag=tag,
        )
    if isinstance(value, bool):
        _typed(path, tag, text_type, BOOLEAN_TYPES, ("boolean", "真偽値"))
        return "true" if value else "false"
    if isinstance(value, int | float):  # plain Python values (to_xml called directly)
        value = JsonNumber(value)
    if isinstance(value, JsonNumber):
        _typed(path, tag, text_type, NUMBER_TYPES, ("number", "数値"))
        return str(value)
    if isinstance(value, str):
        return value
    kind = "an object" if isinstance(value, dict) else f"a {type(value).__name__}"
    raise JsonFormError(
        path, f"{kind} where text is expected", "文字列が入るところに別の値があります", tag=tag
    )


def _typed(
    path: str,
    tag: str,
    text_type: str,
    allowed: frozenset[str],
    kind: tuple[str, str],
) -> None:
    """RK-API016 unless the leaf's type takes this kind of JSON value (or is unknown)."""
    if text_type and text_type not in allowed:
        raise JsonFormError(
            path, kind[0], kind[1], code="RK-API016", rule="json_string_expected", tag=tag
        )


# --- XML → JSON --------------------------------------------------------------------------


def to_json(document: etree._Element) -> dict[str, Any]:
    """The JSON form of a canonical ``PlatformMessage`` (e.g. an inquiry's reply)."""
    return _object(document, child_table().root)


def _object(element: etree._Element, table: dict[str, Node]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for child in element.iterchildren(tag=etree.Element):
        local = etree.QName(child).localname
        node = table.get(local)
        value = _value(child, node.children if node is not None else {})
        if node is not None and node.repeats:
            result.setdefault(local, []).append(value)
        else:
            result[local] = value
    return result


def _value(element: etree._Element, table: dict[str, Node]) -> object:
    if len(element):
        return _object(element, table)
    if element.attrib:
        value: dict[str, str] = {TEXT_KEY: element.text or ""}
        value.update({ATTRIBUTE_PREFIX + str(k): str(v) for k, v in element.attrib.items()})
        return value
    return element.text or ""
