"""Putting a translated service element into a PlatformMessage, and taking one out.

On ingress a system with its own format sends a PlatformMessage whose Header is the
platform's and whose body is the system's own document; the Translate-in stage replaces that
body with the standard service element. On egress the destination's document replaces the
service element (XML) or is the whole body (CSV, fixed width, JSON).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from lxml import etree

from bus.catalogue import NS_ENVELOPE
from bus.mapping.standard import escape

_ENV = f"{{{NS_ENVELOPE}}}"


def header_and_body(
    document: etree._Element,
) -> tuple[etree._Element | None, etree._Element | None]:
    """The Header and the first element after it of a PlatformMessage."""
    if document.tag != f"{_ENV}PlatformMessage":
        return None, None
    children = list(document.iterchildren(tag=etree.Element))
    header = children[0] if children and children[0].tag == f"{_ENV}Header" else None
    body = children[1] if header is not None and len(children) > 1 else None
    return header, body


def splice(header: etree._Element, body: bytes) -> bytes:
    """A PlatformMessage made of ``header`` and ``body`` (an element's XML text)."""
    head = etree.tostring(header, encoding="unicode")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<env:PlatformMessage xmlns:env="{NS_ENVELOPE}">'
        f"{head}{body.decode('utf-8')}</env:PlatformMessage>"
    ).encode()


def wrap(body: bytes, service: str, tenant: str, system: str) -> bytes:
    """A PlatformMessage with a fresh Header around a translated service element (what
    ``renkei mapping apply`` and the golden tests validate)."""
    issued = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    header = (
        f'<env:Header xmlns:env="{NS_ENVELOPE}"><env:messageId>{uuid.uuid4()}</env:messageId>'
        f"<env:service><env:name>{escape(service.removesuffix('Reply'))}</env:name>"
        f"<env:version>1.0</env:version></env:service>"
        f"<env:client><env:tenant>{escape(tenant)}</env:tenant>"
        f"<env:system>{escape(system)}</env:system></env:client>"
        f"<env:issuedAt>{issued}</env:issuedAt><env:protocolVersion>1.0</env:protocolVersion>"
        "</env:Header>"
    )
    if service.endswith("Reply"):
        header = header.replace(
            "</env:messageId>",
            f"</env:messageId><env:correlationId>{uuid.uuid4()}</env:correlationId>",
        )
    return splice(etree.fromstring(header), body)
