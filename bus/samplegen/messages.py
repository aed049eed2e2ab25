"""Whole sample messages: a Header naming a pilot town and a sample system, and a service
element filled with one consistent subject."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD
from bus.samplegen.content_model import BuildOptions, content_model
from bus.samplegen.values import TOWNS, Town, ValueFiller, new_person
from bus.wareki import JST

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NSMAP = {"env": NS_ENVELOPE, "svc": NS_SERVICE, "std": NS_STANDARD, "ext": NS_EXTENSION}
REPLY = "Reply"

# The sample connected systems (the hub core's sample configuration registers them).
SENDING_SYSTEM = {
    "ResidentChangeNotice": "juki",
    "AddresseeInquiry": "tainou",
    "TaxAssessmentInquiry": "tainou",
    "LevyNotice": "zeimu",
    "PaymentNotice": "shuno",
    "DelinquencyInquiry": "shuno",
    "DelinquencyActionNotice": "tainou",
    "NhiEligibilityNotice": "kokuho",
    "RegistrationNotice": "houmu",
    "PropertyValuationChangeNotice": "kotei",
}
# The provider that answers each inquiry.
REPLYING_SYSTEM = {
    "AddresseeInquiry": "juki",
    "TaxAssessmentInquiry": "zeimu",
    "DelinquencyInquiry": "tainou",
}


@dataclass(frozen=True, slots=True)
class MessageSpec:
    service: str  # the service element's local name (an inquiry reply ends in Reply)
    seed: int
    town: Town = TOWNS[0]
    full: bool = True
    today: date = date(2026, 4, 1)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, f"{{{NS_ENVELOPE}}}{name}")
    child.text = text
    return child


def _header(root: etree._Element, spec: MessageSpec, rng: random.Random, subject: str) -> None:
    service = spec.service.removesuffix(REPLY)
    is_reply = spec.service.endswith(REPLY)
    header = _sub(root, "Header")
    _sub(header, "messageId", _uuid(rng))
    if is_reply:
        _sub(header, "correlationId", _uuid(rng))
    service_ref = _sub(header, "service")
    _sub(service_ref, "name", service)
    _sub(service_ref, "version", "1.0")
    client = _sub(header, "client")
    _sub(client, "tenant", spec.town.code)
    _sub(client, "system", REPLYING_SYSTEM[service] if is_reply else SENDING_SYSTEM[service])
    if spec.full:
        _sub(header, "subject", subject)
        _sub(header, "userId", f"op{rng.randrange(1, 999):03d}")
    issued = datetime.combine(spec.today, time(9, 0), JST) + timedelta(
        seconds=rng.randrange(0, 8 * 3600)
    )
    _sub(header, "issuedAt", issued.isoformat())
    _sub(header, "protocolVersion", "1.0")


def build_message(spec: MessageSpec) -> etree._Element:
    """The canonical ``PlatformMessage`` tree for ``spec`` (deterministic for a seed)."""
    rng = random.Random(spec.seed)
    model = content_model()
    person = new_person(rng, spec.town)
    root = etree.Element(f"{{{NS_ENVELOPE}}}PlatformMessage", nsmap=NSMAP)
    _header(root, spec, rng, person.addressee_number)
    filler = ValueFiller(model, rng, person, spec.today)
    model.build_service(
        root, spec.service, filler, BuildOptions(full=spec.full, repeats=2 if spec.full else 1)
    )
    return root


def to_soap(document: etree._Element) -> etree._Element:
    """The SOAP 1.1 binding: the Header in ``soap:Header``, the service element in the Body."""
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11, **NSMAP})
    header, service = document[0], document[1]
    etree.SubElement(envelope, f"{{{SOAP11}}}Header").append(header)
    etree.SubElement(envelope, f"{{{SOAP11}}}Body").append(service)
    return envelope


def serialize(document: etree._Element) -> bytes:
    return etree.tostring(document, encoding="UTF-8", xml_declaration=True, pretty_print=True)


def generate_corpus(count: int, seed: int = 0) -> list[bytes]:
    """``count`` full messages across every service and town, for tests and benchmarks."""
    services = content_model().services()
    return [
        serialize(
            build_message(MessageSpec(services[i % len(services)], seed + i, TOWNS[i % len(TOWNS)]))
        )
        for i in range(count)
    ]
