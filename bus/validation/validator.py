"""The validator: secure parse → canonical form → XSD → domain rules, all findings returned.

When the XSD fails, the domain rules still run on the fields that parsed (an element whose
own XSD check failed is not checked again), so a caller sees every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_SERVICE, Catalogue, Item, load_catalogue
from bus.errors import make_finding
from bus.masking import mask
from bus.pipeline import Envelope, Finding, Severity, SystemRef
from bus.rules import RULES
from bus.rules.charset import is_clean
from bus.validation.schema import SchemaValidator, element_path
from bus.validation.secure_parse import ParseLimits, secure_parse

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
PLATFORM_MESSAGE = f"{{{NS_ENVELOPE}}}PlatformMessage"
HEADER = f"{{{NS_ENVELOPE}}}Header"
REPLY_SUFFIX = "Reply"

# Rules the XSD already enforces completely (pattern / xs:date) need no second pass.
_XSD_ENFORCED_RULES = frozenset({"kana", "date_event", "date_deadline", "text"})


class AtenaCheck(StrEnum):
    """How the 宛名番号/世帯番号 M11 W2–7 check is reported: older numbers lack it."""

    OFF = "off"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ValidatorOptions:
    limits: ParseLimits = field(default_factory=ParseLimits)
    atena_check: AtenaCheck = AtenaCheck.WARN


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
        self._rule_items = {
            item.tag: item
            for item in self.catalogue.items
            if item.rule not in _XSD_ENFORCED_RULES
            and not (item.rule == "atena_number" and self.options.atena_check is AtenaCheck.OFF)
        }

    def validate(self, data: bytes) -> ValidationReport:
        parsed = secure_parse(data, self.options.limits)
        if parsed.root is None:
            return ValidationReport(list(parsed.findings))
        findings = list(parsed.findings)
        document = _canonical(parsed.root, findings)
        if document is None:
            return ValidationReport(findings)
        schema_result = self._schema.validate(document)
        findings.extend(schema_result.findings)
        findings.extend(self._domain_findings(document, schema_result.failed))
        service_element = _service_element(document)
        service = etree.QName(service_element).localname if service_element is not None else None
        envelope = _envelope(document.find(HEADER))
        if envelope is not None and service is not None:
            findings.extend(_service_name_findings(envelope, service, document))
        return ValidationReport(findings, document, envelope, service)

    def _domain_findings(
        self, document: etree._Element, failed: set[etree._Element]
    ) -> list[Finding]:
        findings: list[Finding] = []
        for element in document.iter(*self._rule_items):
            if element in failed:
                continue
            findings.extend(self._apply(self._rule_items[element.tag], element))
        if not _document_text_is_clean(document):
            findings.extend(self._repertoire_findings(document, failed))
        return findings

    def _repertoire_findings(
        self, document: etree._Element, failed: set[etree._Element]
    ) -> list[Finding]:
        """The slow path, only taken when the document's text holds a suspect character."""
        findings: list[Finding] = []
        for element in document.iter():
            item = self.catalogue.by_tag.get(element.tag)
            if item is None or element in failed:
                continue
            attributes = "".join(str(value) for value in element.attrib.values())
            if not is_clean(element.text or "") or not is_clean(attributes):
                findings.extend(self._apply(item, element, rule="text"))
        return findings

    def _apply(self, item: Item, element: etree._Element, rule: str | None = None) -> list[Finding]:
        rule = rule or item.rule
        value = element.text or ""
        attributes = {str(key): str(val) for key, val in element.attrib.items()}
        severity = None
        if rule == "atena_number" and self.options.atena_check is AtenaCheck.ERROR:
            severity = Severity.ERROR
        return [
            make_finding(
                violation.code,
                path=element_path(element),
                item=item.id,
                name_ja=item.name_ja,
                rule=rule,
                value_masked=mask(value, personal=item.personal),
                severity=severity,
                # expected/actual may quote the value (a date of birth): masked like it
                **{k: mask(v, personal=item.personal) for k, v in violation.params.items()},
            )
            for violation in RULES[rule](value, attributes)
        ]


# Layout whitespace between elements; a control character inside a free-text value is
# refused by the XSD's [^\p{Cc}] patterns, so dropping these here hides nothing.
_LAYOUT = str.maketrans("", "", "\t\n\r")
_ALT_ATTRIBUTES = etree.XPath("//@alt")


def _document_text_is_clean(document: etree._Element) -> bool:
    """One repertoire check over all text (serialized in C) and every ``alt`` attribute."""
    text = etree.tostring(document, method="text", encoding="unicode").translate(_LAYOUT)
    alternates = _ALT_ATTRIBUTES(document)
    return is_clean(text) and (
        not isinstance(alternates, list) or is_clean("".join(str(a) for a in alternates))
    )


def _canonical(root: etree._Element, findings: list[Finding]) -> etree._Element | None:
    """The ``PlatformMessage`` itself, or one rebuilt from a SOAP 1.1 Header and Body."""
    if root.tag == PLATFORM_MESSAGE:
        return root
    if root.tag != f"{{{SOAP11}}}Envelope":
        findings.append(make_finding("RK-ENV001", path="/", actual=etree.QName(root).localname))
        return None
    header = root.find(f"{{{SOAP11}}}Header/{HEADER}")
    body = root.find(f"{{{SOAP11}}}Body")
    body_children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if header is None or len(body_children) != 1:
        findings.append(make_finding("RK-ENV002", path="/Envelope"))
        return None
    document = etree.Element(PLATFORM_MESSAGE, nsmap={"env": NS_ENVELOPE})
    document.append(header)
    document.append(body_children[0])
    return document


def _service_element(document: etree._Element) -> etree._Element | None:
    for child in document:
        if isinstance(child.tag, str) and child.tag.startswith(f"{{{NS_SERVICE}}}"):
            return child
    return None


def _text(header: etree._Element, path: str) -> str | None:
    element = header.find(path, namespaces={"e": NS_ENVELOPE})
    return element.text if element is not None and element.text else None


def _system(header: etree._Element, name: str) -> SystemRef | None:
    tenant, system = _text(header, f"e:{name}/e:tenant"), _text(header, f"e:{name}/e:system")
    return SystemRef(tenant, system) if tenant and system else None


def _envelope(header: etree._Element | None) -> Envelope | None:
    """The Header as an :class:`Envelope`, when its required fields are readable."""
    if header is None:
        return None
    message_id, name = _text(header, "e:messageId"), _text(header, "e:service/e:name")
    client, issued = _system(header, "client"), _text(header, "e:issuedAt")
    if not (message_id and name and client and issued):
        return None
    try:
        issued_at = datetime.fromisoformat(issued)
    except ValueError:
        return None
    return Envelope(
        message_id=message_id,
        service=name,
        service_version=_text(header, "e:service/e:version") or "",
        client=client,
        issued_at=issued_at,
        protocol_version=_text(header, "e:protocolVersion") or "",
        correlation_id=_text(header, "e:correlationId"),
        relates_to=_text(header, "e:relatesTo"),
        target=_system(header, "target"),
        subject=_text(header, "e:subject"),
        user_id=_text(header, "e:userId"),
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
