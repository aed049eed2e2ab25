"""The secure parse every inbound XML document goes through before anything else reads it.

Defences, in the order they run (each one is cheap; none walks the tree in Python):

1. **Size** is checked on ``len(data)`` before any byte is parsed (RK-SEC002), so an
   oversize body costs nothing but the length check. Empty / whitespace-only → RK-SEC008.
2. **Encoding**: only UTF-8 (with or without BOM). UTF-16/32 and EBCDIC are recognised from
   the first bytes (XML 1.0 Appendix F) and a declaration naming any other encoding is refused
   (RK-SEC005): libxml2 would otherwise transcode Shift_JIS, ISO-2022-JP, UTF-16… silently,
   and every later stage assumes UTF-8. *Invalid* UTF-8 (overlong forms, surrogates, truncated
   sequences) and NUL bytes are **RK-SEC006** (not well-formed): the declared encoding is right,
   the bytes are broken. NUL is found with one ``memchr``; bad UTF-8 by libxml2's own decoder,
   which is strict (measured on libxml2 2.14.6: ``ERR_INVALID_ENCODING``).
3. **DOCTYPE** is refused (RK-SEC001) by scanning only the prolog (XML declaration, whitespace,
   comments, PIs) before parsing. No DTD means no entity declarations, so XXE, parameter-entity
   OOB, billion laughs and quadratic blow-up never reach libxml2. After the parse ``docinfo``
   is checked again in case the scan and libxml2 ever disagree.
4. **Parser** settings forbid entity expansion, DTD loading and network access; libxml2 in the
   lxml wheels is also built without HTTP support. An undefined entity reference (there can be
   no defined ones) is a libxml2 error mapped to RK-SEC009.
5. **Depth**: without ``huge_tree`` libxml2 refuses nesting deeper than 256 while parsing
   (``ERR_RESOURCE_LIMIT`` "Excessive depth in document"), mapped to RK-SEC003; so 100,000
   levels fail fast and no Python recursion ever sees them. A smaller configured limit is
   checked by one XPath in C, only when the document is long enough to be that deep.
6. **Attributes** per element (RK-SEC004): one XPath in C, only when the document has enough
   bytes and enough ``=`` signs to hold that many attributes on one element.
7. **XInclude** is never processed (we never call ``xinclude()``), and an element in either
   XInclude namespace is refused (RK-SEC007) so no later stage or consumer can process it.

``xsi:schemaLocation`` and similar hints are never followed: nothing here loads anything.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Final

from lxml import etree

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.validation.paths import element_path

__all__ = [
    "LIBXML2_MAX_DEPTH",
    "XINCLUDE_NAMESPACES",
    "ParseLimits",
    "ParseResult",
    "own_encoding",
    "parse_stored",
    "refuse_early",
    "root_local_name",
    "secure_parse",
]

#: libxml2's nesting limit without XML_PARSE_HUGE (256 levels parse, 257 fail).
LIBXML2_MAX_DEPTH: Final = 256

XINCLUDE_NAMESPACES: Final = (
    "http://www.w3.org/2001/XInclude",
    "http://www.w3.org/2003/XInclude",
)
_XINCLUDE_TAGS: Final = tuple(f"{{{ns}}}*" for ns in XINCLUDE_NAMESPACES)

_ROOT_PATH: Final = "/"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF8_NAMES: Final = frozenset({"UTF-8", "UTF8"})

# XML 1.0 Appendix F: byte-order marks and the first bytes of "<?" in other encodings.
# UTF-32 BOMs must be tested before UTF-16 ones (FF FE 00 00 starts with FF FE).
_FOREIGN_SIGNATURES: Final = (
    (b"\x00\x00\xfe\xff", "UTF-32BE (BOM)"),
    (b"\xff\xfe\x00\x00", "UTF-32LE (BOM)"),
    (b"\xfe\xff", "UTF-16BE (BOM)"),
    (b"\xff\xfe", "UTF-16LE (BOM)"),
    (b"\x00\x00\x00\x3c", "UTF-32BE"),
    (b"\x3c\x00\x00\x00", "UTF-32LE"),
    (b"\x00\x3c\x00\x3f", "UTF-16BE"),
    (b"\x3c\x00\x3f\x00", "UTF-16LE"),
    (b"\x4c\x6f\xa7\x94", "EBCDIC"),
)

_NOT_XML_SPACE: Final = re.compile(rb"[^ \t\r\n]")
# The encoding pseudo-attribute of an XML declaration; "[^?]" keeps the search inside it.
_DECLARED_ENCODING: Final = re.compile(
    rb"""<\?xml[ \t\r\n][^?]*?\bencoding[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')"""
)
# Misc* of the prolog (whitespace, comments, PIs incl. the XML declaration). Anchored, with
# nothing after the star, so it never backtracks: linear even on hostile input. Possessive
# (``*+``, ``++``): the same match, but sre keeps no backtracking state per item, which had
# grown with a million comments and made each cost 2-4 times more once past the CPU caches.
_PROLOG_MISC: Final = re.compile(rb"(?:[ \t\r\n]++|<!--.*?-->|<\?.*?\?>)*+", re.DOTALL)

_ERR = etree.ErrorTypes
_ENTITY_ERRORS: Final = frozenset(
    {
        _ERR.ERR_UNDECLARED_ENTITY,
        _ERR.WAR_UNDECLARED_ENTITY,
        _ERR.ERR_UNPARSED_ENTITY,
        _ERR.ERR_ENTITY_IS_EXTERNAL,
        _ERR.ERR_ENTITY_IS_PARAMETER,
        _ERR.ERR_ENTITY_LOOP,
        _ERR.ERR_ENTITY_PROCESSING,
        _ERR.ERR_ENTITYREF_IN_PROLOG,
        _ERR.ERR_ENTITYREF_IN_EPILOG,
    }
)
_ENCODING_NAME_ERRORS: Final = frozenset({_ERR.ERR_UNSUPPORTED_ENCODING, _ERR.ERR_UNKNOWN_ENCODING})


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Resource limits for one document.

    ``max_depth`` above :data:`LIBXML2_MAX_DEPTH` has no effect: libxml2 refuses deeper
    nesting unless ``huge_tree`` is set, which this module never does.
    """

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 256
    max_attributes: int = 1000
    # libxml2 works out each schema error's path by walking the element's siblings: an
    # element with 40,000 failing children took it 8 s, with 10,000 under half a second
    max_children: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_attributes", "max_children"):
            if getattr(self, name) < 1:
                raise ValueError(f"ParseLimits.{name} must be at least 1")

    @property
    def effective_depth(self) -> int:
        """The depth limit actually enforced (libxml2 caps it at 256)."""
        return min(self.max_depth, LIBXML2_MAX_DEPTH)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ParseResult:
    """``root`` is the parsed document element, or ``None`` when the document was refused;
    then ``findings`` holds at least one error-severity finding. Weakly referenceable, so a
    caller can tie what the tree holds (bus/validation/parse_budget.py) to its lifetime."""

    root: etree._Element | None
    findings: tuple[Finding, ...]


class _PerThread(threading.local):
    """lxml parsers and XPath evaluators must not be shared between threads."""

    def __init__(self) -> None:
        self.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_blank_text=False,
            collect_ids=False,
        )
        self.xpaths: dict[str, etree.XPath] = {}

    def xpath(self, expression: str) -> etree.XPath:
        compiled = self.xpaths.get(expression)
        if compiled is None:
            compiled = self.xpaths[expression] = etree.XPath(expression)
        return compiled


_local = _PerThread()
_NO_FINDINGS: Final[tuple[Finding, ...]] = ()


def _refuse(finding: Finding) -> ParseResult:
    return ParseResult(None, (finding,))


def refuse_early(
    data: bytes, limits: ParseLimits = ParseLimits(), roots: frozenset[str] | None = None
) -> ParseResult | None:
    """The refusals :func:`secure_parse` makes before libxml2 reads anything (size, encoding,
    NUL, DOCTYPE, a foreign root): byte checks only, microseconds even for a large body.
    ``None`` when the document needs the parse."""
    size = len(data)
    if size > limits.max_bytes:
        return _refuse(
            make_finding("RK-SEC002", path=_ROOT_PATH, limit=limits.max_bytes, actual=size)
        )
    refusal = _check_prolog(data)
    if refusal is not None or roots is None:
        return refusal
    name = root_local_name(data)
    if name is not None and name not in roots:
        return _refuse(make_finding("RK-ENV001", path=_ROOT_PATH, actual=name))
    return None


def secure_parse(
    data: bytes, limits: ParseLimits = ParseLimits(), roots: frozenset[str] | None = None
) -> ParseResult:
    """Parse untrusted bytes into an lxml tree, or refuse them with RK-SEC findings.

    Never raises for any ``bytes`` input; never expands entities, loads a DTD, follows
    XInclude or schema-location hints, or touches the file system or network.

    ``roots``: the local names the document element may have. A document whose first start
    tag plainly names another is refused RK-ENV001 after the byte-level checks and before
    libxml2 reads it (a 2 MB attribute on a foreign root costs no parse); a name the bytes do
    not show plainly (not ASCII) is left to the caller's check of the parsed root.
    """
    refusal = refuse_early(data, limits, roots)
    if refusal is not None:
        return refusal

    try:
        root = etree.fromstring(data, _local.parser)
    except etree.XMLSyntaxError as error:
        return ParseResult(None, (_syntax_finding(error, limits),))
    except (etree.LxmlError, ValueError) as error:  # defensive: never leak an exception
        detail = f"{type(error).__name__}: {error}"
        return _refuse(make_finding("RK-SEC006", path=_ROOT_PATH, detail=detail))

    findings = _check_tree(root, data, limits)
    if findings:
        return ParseResult(None, findings)
    return ParseResult(root, _NO_FINDINGS)


def _check_prolog(data: bytes) -> ParseResult | None:
    """Byte-level checks before libxml2 sees the document: encoding, NUL, emptiness and a
    DOCTYPE before the root element (so no DTD is ever parsed)."""
    head = data[:4]
    # Every foreign signature has a NUL, starts with FE/FF, or is EBCDIC "<?xm" (4C 6F A7 94):
    # test that first so a normal document skips the table.
    if b"\x00" in head or head[:1] in (b"\xfe", b"\xff") or head == b"\x4c\x6f\xa7\x94":
        for signature, name in _FOREIGN_SIGNATURES:
            if head.startswith(signature):
                return _refuse(make_finding("RK-SEC005", path=_ROOT_PATH, actual=name))
    start = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0

    first = _NOT_XML_SPACE.search(data, start)
    if first is None:
        return _refuse(make_finding("RK-SEC008", path=_ROOT_PATH))

    nul = data.find(b"\x00")
    if nul >= 0:
        detail = f"NUL byte at offset {nul}"
        return _refuse(make_finding("RK-SEC006", path=_ROOT_PATH, detail=detail))

    if data.startswith(b"<?xml", start):
        declared = _DECLARED_ENCODING.match(data, start)
        if declared is not None:
            name = (declared.group(1) or declared.group(2) or b"").decode("latin-1")
            if name.upper() not in _UTF8_NAMES:
                actual = _shown_encoding(name)
                return _refuse(make_finding("RK-SEC005", path=_ROOT_PATH, actual=actual))

    misc = _PROLOG_MISC.match(data, start)
    pos = misc.end() if misc is not None else start
    if data[pos : pos + 9].upper() == b"<!DOCTYPE":
        detail = f"DOCTYPE in the prolog at offset {pos}"
        return _refuse(make_finding("RK-SEC001", path=_ROOT_PATH, detail=detail))
    return None  # the root element, or something libxml2 will reject


def own_encoding(data: bytes) -> str | None:
    """The encoding a document names for itself (XML 1.0 §4.3.3, Appendix F): its byte-order
    mark or the first bytes of ``<?xml`` in another encoding, else its XML declaration's
    ``encoding``; ``None`` when it names none (then it is UTF-8). A byte check, no parse."""
    head = data[:4]
    if data.startswith(_UTF8_BOM):
        return "UTF-8"
    if b"\x00" in head or head[:1] in (b"\xfe", b"\xff") or head == b"\x4c\x6f\xa7\x94":
        for signature, name in _FOREIGN_SIGNATURES:
            if head.startswith(signature):
                return name
    if not data.startswith(b"<?xml"):
        return None
    declared = _DECLARED_ENCODING.match(data)
    if declared is None:
        return None
    return _shown_encoding((declared.group(1) or declared.group(2) or b"").decode("latin-1"))


# The first start tag's name (an optional prefix, then the local name), ASCII names only.
_ROOT_START_TAG: Final = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)[ \t\r\n/>]")


def root_local_name(data: bytes) -> str | None:
    """The document element's local name as the bytes show it after the prolog's Misc
    (BOM, XML declaration, comments, PIs, whitespace), without parsing; ``None`` when they
    do not show an ASCII name plainly there (a DOCTYPE, a non-ASCII name, not XML)."""
    start = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    misc = _PROLOG_MISC.match(data, start)
    tag = _ROOT_START_TAG.match(data, misc.end() if misc is not None else start)
    return tag.group(1).decode("ascii") if tag is not None else None


_NOT_PRINTABLE_ASCII: Final = re.compile(r"[^\x21-\x7e]")
_ENCODING_SHOWN_CAP: Final = 40


def _shown_encoding(name: str) -> str:
    """A declared encoding name fit for a message: printable ASCII only (control characters
    would make a SOAP Fault unwritable), at most 40 characters (found by fuzzing)."""
    if not name:
        return "(empty)"
    return _NOT_PRINTABLE_ASCII.sub("?", name[:_ENCODING_SHOWN_CAP])


def _syntax_finding(error: etree.XMLSyntaxError, limits: ParseLimits) -> Finding:
    """Map a libxml2 error to an RK-SEC code; libxml2's text goes only into ``detail``."""
    detail = str(error.msg or error)
    code: int = getattr(error, "code", 0)  # libxml2's xmlParserErrors value (not in the stubs)
    if code == _ERR.ERR_RESOURCE_LIMIT and "depth" in detail:
        return make_finding(
            "RK-SEC003", path=_ROOT_PATH, detail=detail, limit=limits.effective_depth
        )
    if code in _ENTITY_ERRORS or (code == _ERR.ERR_RESOURCE_LIMIT and "entit" in detail):
        return make_finding("RK-SEC009", path=_ROOT_PATH, detail=detail)
    if code in _ENCODING_NAME_ERRORS:
        return make_finding("RK-SEC005", path=_ROOT_PATH, detail=detail, actual="unknown")
    return make_finding("RK-SEC006", path=_ROOT_PATH, detail=detail)


def _check_tree(root: etree._Element, data: bytes, limits: ParseLimits) -> tuple[Finding, ...]:
    """Checks on the parsed tree, all in C; each is skipped when the raw bytes prove it
    cannot fail, so a typical document pays only a few substring tests."""
    findings: list[Finding] = []
    docinfo = root.getroottree().docinfo
    internal: etree.DTD | None = docinfo.internalDTD  # None without a DOCTYPE (stubs disagree)
    external: etree.DTD | None = docinfo.externalDTD
    if internal is not None or external is not None:
        findings.append(make_finding("RK-SEC001", path=_ROOT_PATH, detail="DTD after parse"))
    encoding: str | None = docinfo.encoding  # lxml reports "UTF-8" when none is declared
    if encoding is not None and encoding.upper() not in _UTF8_NAMES:
        findings.append(make_finding("RK-SEC005", path=_ROOT_PATH, actual=encoding))

    # The XInclude namespace URI needs a literal "X" or a character reference ("&#88;"; the
    # predefined entities cannot spell letters): two memchr calls decide whether to walk.
    if b"X" in data or b"&" in data:
        for element in root.iter(*_XINCLUDE_TAGS):
            findings.append(make_finding("RK-SEC007", path=element_path(element)))
            break

    # Depth d+1 needs d open/close pairs ("<a></a>", 7 bytes) and one "<a/>" (4 bytes).
    depth = limits.effective_depth
    if depth < LIBXML2_MAX_DEPTH and len(data) >= 7 * depth + 4:
        deeper = _local.xpath("boolean(/*" + "/*" * depth + ")")
        if deeper(root):
            findings.append(make_finding("RK-SEC003", path=_ROOT_PATH, limit=depth))

    # n attributes on one element need n literal "=" and at least 5 bytes each (' a=""').
    n = limits.max_attributes + 1
    # "//*/@*[n]" is the fast form (~30 ns per element); the element is found only on refusal.
    if len(data) >= 5 * n and data.count(b"=") >= n and _local.xpath(f"boolean(//*/@*[{n}])")(root):
        path = _first_path(root, f"@*[{n}]")
        findings.append(make_finding("RK-SEC004", path=path, limit=limits.max_attributes))

    # n child elements need n literal "<" and at least 4 bytes each ("<a/>").
    n = limits.max_children + 1
    if len(data) >= 4 * n and data.count(b"<") >= n and _local.xpath(f"boolean(//*/*[{n}])")(root):
        path = _first_path(root, f"*[{n}]")
        findings.append(make_finding("RK-SEC010", path=path, limit=limits.max_children))
    return tuple(findings)


def _first_path(root: etree._Element, predicate: str) -> str:
    """The path of the first element matching ``predicate`` (looked for only on refusal)."""
    crowded = _local.xpath(f"(//*[{predicate}])[1]")(root)
    if isinstance(crowded, list) and crowded and isinstance(crowded[0], etree._Element):
        return element_path(crowded[0])
    return _ROOT_PATH


def parse_stored(data: bytes) -> ParseResult:
    """Parse a body the hub stored itself (a document the Validate stage accepted, serialized
    by the Store stage) with :func:`secure_parse`'s parser settings, but without its byte and
    tree checks: the body passed them on its way in. A dispatch worker parses every delivery's
    body, and those checks cost about a third of the parse. Should the body not parse (a
    damaged store), :func:`secure_parse` says why."""
    try:
        return ParseResult(etree.fromstring(data, _local.parser), _NO_FINDINGS)
    except (etree.LxmlError, ValueError):
        return secure_parse(data)
