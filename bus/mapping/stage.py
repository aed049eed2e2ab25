"""The hub's use of mapping files: Translate in (DESIGN §1 stage 3) and the per-destination
translation on egress (stage 8).

A system whose configuration names a mapping sends a PlatformMessage whose Header is the
platform's and whose body is its own XML document; when the mapping has an inbound section
for the Header's service, Translate in replaces that body with the standard service element,
so Validate sees a standard message. On egress, a destination whose mapping has an outbound
section for the service gets the stored standard message translated: for XML the service
element is replaced by the system's document (the Header stays, so messageId travels);
CSV, fixed-width and JSON bodies are the system's record alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from bus.catalogue import NS_SERVICE
from bus.config.models import System
from bus.errors import make_finding
from bus.mapping.envelope import header_and_body, splice
from bus.mapping.formats.xml import XmlFormat
from bus.mapping.loader import MappingError, cached_mapping, resolve
from bus.mapping.section import Direction, Section
from bus.mapping.standard import service_element
from bus.mapping.values import FieldFailure
from bus.pipeline import Finding, Message, StageName
from bus.protection.limits import UnreadableBody, limited_body
from bus.validation.secure_parse import parse_stored, secure_parse
from bus.validation.validator import MESSAGE_ROOT_NAMES

if TYPE_CHECKING:
    from bus.config.snapshots import ConfigSource

_ENV_SERVICE = "{urn:renkei:platform:envelope:1}service/{urn:renkei:platform:envelope:1}name"
_ENV_SYSTEM = "{urn:renkei:platform:envelope:1}client/{urn:renkei:platform:envelope:1}system"


class OutboundTranslationError(ValueError):
    """A stored message cannot be translated for a destination (a permanent failure)."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("; ".join(f"{f.code} {f.path}" for f in findings))
        self.findings = findings


def section_for(system: System, service: str, direction: Direction) -> Section | None:
    """The system's mapping section for ``service``, or None when it has none (speaks the
    standard). Raises MappingError when the configured file does not load."""
    if system.mapping is None:
        return None
    return cached_mapping(resolve(system.mapping)).section(service, direction)


def _refusal(system: str, mapping: str, detail: str) -> Finding:
    return make_finding(
        "RK-MAP012", path="/PlatformMessage", actual=system, expected=mapping, detail=detail
    )


@dataclass(frozen=True, slots=True)
class TranslateInStage:
    provider: ConfigSource
    name: StageName = field(default=StageName.TRANSLATE_IN)

    def __call__(self, message: Message) -> Message:
        index = self.provider.current().index
        candidates = message.identity.systems if message.identity is not None else frozenset()
        if not any((s := index.system(c)) is not None and s.mapping for c in candidates):
            return message  # no calling system has a mapping: nothing to parse twice
        if message.parsed is None:
            # the parse Validate makes (an adapter's screening parse): kept for it below
            message.parsed = secure_parse(message.raw, roots=MESSAGE_ROOT_NAMES)
        parsed = message.parsed
        if parsed.root is None:
            return message  # Validate reports why
        header, body = header_and_body(parsed.root)
        if header is None or body is None or etree.QName(body).namespace == NS_SERVICE:
            return message  # already standard (or malformed: Validate reports it)
        system_id, service = header.findtext(_ENV_SYSTEM), header.findtext(_ENV_SERVICE)
        system = index.system(system_id or "") if system_id in candidates else None
        if system is None or system.mapping is None or not service:
            return message
        raw, findings = inbound_document(system, service, header, body)
        message.add_findings(findings)
        if raw is not None:
            message.raw, message.parsed = raw, None  # Validate parses the translation
        return message


def inbound_document(
    system: System, service: str, header: etree._Element, body: etree._Element
) -> tuple[bytes | None, list[Finding]]:
    """A PlatformMessage whose body is ``system``'s own document for ``service`` (a
    notification it sends, or its reply to an inquiry) with the standard service element in
    its place: (the new PlatformMessage or None, findings)."""
    assert system.mapping is not None
    try:
        section = section_for(system, service, "inbound")
    except MappingError as error:
        return None, [_refusal(system.id, system.mapping, error.first)]
    if section is None or not isinstance(section.format, XmlFormat):
        return None, [_refusal(system.id, system.mapping, f"no inbound XML section for {service}")]
    try:
        source = section.format.source(body)
    except FieldFailure as failure:  # the body is not this system's document
        return None, [_refusal(system.id, system.mapping, f"{failure.code}: {failure.params}")]
    translation = section.run(source)
    if translation.output is None:
        return None, translation.findings
    return splice(header, translation.output), translation.findings


def outbound_body(system: System, service: str, body: bytes) -> bytes:
    """``body`` (a stored standard message) as ``system`` takes it: first limited to the items
    the system is entitled to (項目制限, :func:`bus.protection.limits.limited_body`), then
    translated when its mapping has an outbound section for ``service``. Raises
    :class:`OutboundTranslationError`."""
    try:
        body = limited_body(system, body)
    except UnreadableBody as error:
        raise OutboundTranslationError(error.findings) from None
    if system.mapping is None:
        return body
    try:
        section = section_for(system, service, "outbound")
    except MappingError as error:
        raise OutboundTranslationError([_refusal(system.id, system.mapping, error.first)]) from None
    if section is None:
        return body
    parsed = parse_stored(body)
    if parsed.root is None:
        raise OutboundTranslationError(list(parsed.findings))
    header, _ = header_and_body(parsed.root)
    element = service_element(parsed.root) if header is not None else None
    if header is None or element is None:
        raise OutboundTranslationError(
            [_refusal(system.id, system.mapping, "not a PlatformMessage")]
        )
    translation = section.run(section.standard_source(element))
    if translation.output is None:
        raise OutboundTranslationError(translation.findings)
    if isinstance(section.format, XmlFormat):
        return splice(header, translation.output)
    return translation.output
