"""The validator: secure parse → canonical form → XSD → domain rules, all findings returned.

When the XSD fails, the domain rules still run on the fields that parsed (an element whose
own XSD check failed is not checked again), so a caller sees every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import cast

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_SERVICE, Catalogue, Item, load_catalogue
from bus.errors import lookup, make_finding
from bus.masking import mask
from bus.pipeline import Envelope, Finding, Severity, SystemRef
from bus.rules import RULES, RuleViolation
from bus.rules.charset import is_clean, is_clean_layout, suspect
from bus.validation.budget import MAX_FINDINGS, FindingBudget
from bus.validation.paths import ElementPaths, element_path
from bus.validation.schema import SchemaValidator
from bus.validation.secure_parse import ParseLimits, ParseResult, secure_parse

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENVELOPE = f"{{{SOAP11}}}Envelope"
PLATFORM_MESSAGE = f"{{{NS_ENVELOPE}}}PlatformMessage"
_MESSAGE_ROOTS = frozenset({PLATFORM_MESSAGE, SOAP_ENVELOPE})
#: The local names a message's document element may have (its namespace is checked once
#: parsed): anything else is refused before the parse (``secure_parse(roots=…)``).
MESSAGE_ROOT_NAMES = frozenset({"PlatformMessage", "Envelope"})
HEADER = f"{{{NS_ENVELOPE}}}Header"
_SOAP_HEADER = f"{{{SOAP11}}}Header"
_SOAP_BODY = f"{{{SOAP11}}}Body"
_SOAP_PREFIX = f"{{{SOAP11}}}"
REPLY_SUFFIX = "Reply"

# Rules the XSD already enforces completely (pattern / xs:date) need no second pass.
_XSD_ENFORCED_RULES = frozenset({"kana", "date_event", "date_deadline", "text"})


_RULES_READING_ATTRIBUTES = frozenset({"date_birth", "text"})
_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


class AtenaCheck(StrEnum):
    """How the 宛名番号/世帯番号 M11 W2–7 check is reported: older numbers lack it."""

    OFF = "off"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ValidatorOptions:
    limits: ParseLimits = field(default_factory=ParseLimits)
    atena_check: AtenaCheck = AtenaCheck.WARN
    max_findings: int = MAX_FINDINGS  # reported in full; the rest counted (RK-XSD009)


@dataclass(frozen=True, slots=True)
class _Report:
    """What one validation's findings share: the cap on their number, the element paths."""

    budget: FindingBudget
    paths: ElementPaths


@dataclass(slots=True)
class ValidationReport:
    findings: list[Finding]
    document: etree._Element | None = None
    envelope: Envelope | None = None
    service: str | None = None

    @property
    def valid(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


class Validator:
    """Validates platform messages; build once, reuse for every message (thread-safe)."""

    def __init__(
        self, options: ValidatorOptions | None = None, catalogue: Catalogue | None = None
    ) -> None:
        self.options = options or ValidatorOptions()
        self.catalogue = catalogue or load_catalogue()
        self._schema = SchemaValidator(self.catalogue)
        suspect(), suspect(layout=True)  # made now, not on the first message
        self._rule_items = {
            item.tag: item
            for item in self.catalogue.items
            if item.rule not in _XSD_ENFORCED_RULES
            and not (item.rule == "atena_number" and self.options.atena_check is AtenaCheck.OFF)
        }

    def validate(self, data: bytes, parsed: ParseResult | None = None) -> ValidationReport:
        """``parsed``: :func:`secure_parse` of ``data`` with these limits and
        :data:`MESSAGE_ROOT_NAMES`, when an adapter already did it (to screen the body before
        ingest); then ``data`` is not parsed again."""
        if parsed is None:
            parsed = secure_parse(data, self.options.limits, MESSAGE_ROOT_NAMES)
        if parsed.root is None:
            return ValidationReport(list(parsed.findings))
        findings = list(parsed.findings)
        document = _canonical(parsed.root, findings)
        if document is None:
            return ValidationReport(findings)
        _normalise_ids(document)
        report = _Report(FindingBudget(self.options.max_findings), ElementPaths())
        schema_result = self._schema.validate(document, report.budget, report.paths)
        findings.extend(schema_result.findings)
        findings.extend(self._domain_findings(document, data, schema_result.failed, report))
        omitted = report.budget.summary()
        if omitted is not None:
            findings.append(omitted)
        service_element = _service_element(document)
        service = (
            service_element.tag[len(_SERVICE_PREFIX) :] if service_element is not None else None
        )
        envelope = _envelope(document[0] if len(document) and document[0].tag == HEADER else None)
        if envelope is not None and service is not None:
            findings.extend(_service_name_findings(envelope, service, document))
        return ValidationReport(findings, document, envelope, service)

    def _domain_findings(
        self, document: etree._Element, data: bytes, failed: set[etree._Element], report: _Report
    ) -> list[Finding]:
        findings: list[Finding] = []
        rule_items, rules = self._rule_items, RULES
        for element in document.iter(*rule_items):
            item = rule_items[element.tag]
            # Only ResidentDate rules read attributes: skip making the proxy for the rest.
            attributes = (
                cast(Mapping[str, str], element.attrib)  # the stubs' _Attrib is a Mapping
                if item.rule in _RULES_READING_ATTRIBUTES
                else _NO_ATTRIBUTES
            )
            violations = rules[item.rule](element.text or "", attributes)
            if violations and element not in failed:
                findings.extend(self._findings(item, element, item.rule, violations, report))
        if not _document_text_is_clean(document, data):
            findings.extend(self._repertoire_findings(document, failed, report))
        return findings

    def _repertoire_findings(
        self, document: etree._Element, failed: set[etree._Element], report: _Report
    ) -> list[Finding]:
        """The slow path, only taken when the document's text holds a suspect character."""
        findings: list[Finding] = []
        for element in document.iter():
            item = self.catalogue.by_tag.get(element.tag)
            if item is None or element in failed:
                continue
            attributes = "".join(str(value) for value in element.attrib.values())
            if not is_clean(element.text or "") or not is_clean(attributes):
                violations = RULES["text"](
                    element.text or "", cast(Mapping[str, str], element.attrib)
                )
                findings.extend(self._findings(item, element, "text", violations, report))
        return findings

    def _findings(
        self,
        item: Item,
        element: etree._Element,
        rule: str,
        violations: list[RuleViolation],
        report: _Report,
    ) -> list[Finding]:
        value = element.text or ""
        severity = None
        if rule == "atena_number" and self.options.atena_check is AtenaCheck.ERROR:
            severity = Severity.ERROR
        return [
            make_finding(
                violation.code,
                path=report.paths(element),
                item=item.id,
                name_ja=item.name_ja,
                rule=rule,
                value_masked=mask(value, personal=item.personal),
                severity=severity,
                # expected/actual may quote the value (a date of birth): masked like it
                **{k: mask(v, personal=item.personal) for k, v in violation.params.items()},
            )
            for violation in violations
            if report.budget.admits(severity or lookup(violation.code).severity)
        ]


_ALT_ATTRIBUTES = etree.XPath("//@alt")


def _document_text_is_clean(document: etree._Element, data: bytes) -> bool:
    """One repertoire check over all text (serialized in C) and every ``alt`` attribute
    (looked for only when the raw bytes mention one)."""
    text = etree.tostring(document, method="text", encoding="unicode")
    if not is_clean_layout(text):
        return False
    if b"alt" not in data:
        return True
    alternates = _ALT_ATTRIBUTES(document)
    return not isinstance(alternates, list) or is_clean("".join(str(a) for a in alternates))


def is_message_root(root: etree._Element) -> bool:
    """Whether ``root`` may be a platform message (a ``PlatformMessage`` or a SOAP 1.1
    Envelope); any other document is refused (RK-ENV001)."""
    return root.tag in _MESSAGE_ROOTS


def _canonical(root: etree._Element, findings: list[Finding]) -> etree._Element | None:
    """The ``PlatformMessage`` itself, or one rebuilt from a SOAP 1.1 Header and Body."""
    if root.tag == PLATFORM_MESSAGE:
        return root
    if root.tag != SOAP_ENVELOPE:
        findings.append(make_finding("RK-ENV001", path="/", actual=etree.QName(root).localname))
        return None
    parts = _soap_parts(root)
    if parts is None:
        findings.append(make_finding("RK-ENV002", path="/Envelope"))
        return None
    document = etree.Element(PLATFORM_MESSAGE, nsmap={"env": NS_ENVELOPE})
    document.extend(parts)
    return document


def _soap_parts(envelope: etree._Element) -> tuple[etree._Element, etree._Element] | None:
    """The platform Header and the service element of a SOAP 1.1 Envelope in the one form
    it may take: ``soap:Header`` first, then ``soap:Body`` (SOAP 1.1 §4.1.1), neither
    repeated; the Header holds exactly one ``env:Header``, the Body exactly one element.
    Any other form is ``None`` (RK-ENV002): a second platform Header is never dropped, nor
    text beside the parts (SOAP 1.1's Envelope, Header and Body hold elements only)."""
    children = [child for child in envelope if isinstance(child.tag, str)]
    tags = [child.tag for child in children]
    if tags[:2] != [_SOAP_HEADER, _SOAP_BODY] or {_SOAP_HEADER, _SOAP_BODY} & set(tags[2:]):
        return None
    if any(_holds_text(part) for part in (envelope, children[0], children[1])):
        return None
    headers = list(children[0].iterchildren(HEADER))
    services = [child for child in children[1] if isinstance(child.tag, str)]
    if len(headers) != 1 or len(services) != 1:
        return None
    for name in [name for name in headers[0].attrib if str(name).startswith(_SOAP_PREFIX)]:
        del headers[0].attrib[name]  # SOAP's own (mustUnderstand, actor): not the platform's
    return headers[0], services[0]


_XML_WHITESPACE = " \t\r\n"


def _holds_text(element: etree._Element) -> bool:
    """Whether ``element`` has character data of its own (its text, its children's tails)
    other than XML whitespace."""
    texts = [element.text, *(child.tail for child in element)]
    return any(text and text.strip(_XML_WHITESPACE) for text in texts)


_SERVICE_PREFIX = f"{{{NS_SERVICE}}}"

# RFC 9562 §4: a UUID's hex digits may come in either case and mean the same UUID.
_UUID_ANY_CASE = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)
#: The Header's message ids (env:Uuid): messageId, and the ids that refer to one.
_ID_TAGS = tuple(f"{{{NS_ENVELOPE}}}{name}" for name in ("messageId", "correlationId", "relatesTo"))


def normalised_id(value: str) -> str:
    """A UUID in any case as the lowercase form the envelope schema and the store use;
    any other text as it is (the schema then judges it)."""
    lowered = value.lower()
    return lowered if lowered != value and _UUID_ANY_CASE.fullmatch(value) else value


def _normalise_ids(document: etree._Element) -> None:
    """The Header's UUIDs in lowercase, before the schema sees them: the same message sent
    with ``ABC…`` and ``abc…`` has one id, so the Idempotent Receiver knows it as one (the
    schema's ``env:Uuid`` stays lowercase-only: it describes the canonical form)."""
    header = document[0] if len(document) and document[0].tag == HEADER else None
    if header is None:
        return
    for element in header.iterchildren(*_ID_TAGS):
        text = element.text
        if text is not None:
            element.text = normalised_id(text)


def _service_element(document: etree._Element) -> etree._Element | None:
    return next(document.iterchildren(f"{_SERVICE_PREFIX}*"), None)


_ENV_PREFIX = f"{{{NS_ENVELOPE}}}"


_HEADER_GROUPS = frozenset({"service", "client", "target"})
_GROUP_MEMBERS = frozenset({"name", "version", "tenant", "system"})


def _fields(header: etree._Element) -> dict[str, str]:
    """Header leaves by dotted local name (``service.name``), in one document-order pass:
    a group element (service, client, target) comes just before its members."""
    fields: dict[str, str] = {}
    group = ""
    for element in header.iter(f"{_ENV_PREFIX}*"):
        local = element.tag[len(_ENV_PREFIX) :]
        if local in _HEADER_GROUPS:
            group = local + "."
        elif local in _GROUP_MEMBERS:
            fields[group + local] = element.text or ""
        else:
            group = ""
            fields[local] = element.text or ""
    return fields


def _system(fields: dict[str, str], name: str) -> SystemRef | None:
    tenant, system = fields.get(f"{name}.tenant"), fields.get(f"{name}.system")
    return SystemRef(tenant, system) if tenant and system else None


def _envelope(header: etree._Element | None) -> Envelope | None:
    """The Header as an :class:`Envelope`, when its required fields are readable."""
    if header is None:
        return None
    fields = _fields(header)
    message_id, name = fields.get("messageId") or None, fields.get("service.name") or None
    client, issued = _system(fields, "client"), fields.get("issuedAt")
    if not (message_id and name and client and issued):
        return None
    try:
        issued_at = datetime.fromisoformat(issued)
    except ValueError:
        return None
    return Envelope(
        message_id=message_id,
        service=name,
        service_version=fields.get("service.version", ""),
        client=client,
        issued_at=issued_at,
        protocol_version=fields.get("protocolVersion", ""),
        correlation_id=fields.get("correlationId"),
        relates_to=fields.get("relatesTo"),
        target=_system(fields, "target"),
        subject=fields.get("subject"),
        user_id=fields.get("userId"),
    )


def _service_name_findings(
    envelope: Envelope, service: str, document: etree._Element
) -> list[Finding]:
    """The Header names the service; a reply element is ``<Service>Reply``."""
    if service in (envelope.service, envelope.service + REPLY_SUFFIX):
        return []
    return [
        make_finding(
            "RK-ENV003",
            path=element_path(document) + "/Header/service/name",
            expected=envelope.service,
            actual=service,
        )
    ]
