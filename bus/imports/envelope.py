"""Wraps a translated 登記済通知 service element in a PlatformMessage for the hub.

The messageId is derived from the tenant and the record key (UUID v5), so the same notice
imported again — from the same file or another — is recognised by the hub's Idempotent
Receiver and acknowledged as a duplicate instead of being stored twice.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from bus.catalogue import NS_ENVELOPE
from bus.imports.records import NoticeKey

SERVICE = "RegistrationNotice"  # 登記済通知
SENDER = "houmu"  # the 法務局 system of the configuration
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:renkei:imports:RegistrationNotice")
_SEEDED = hashlib.sha1(_NAMESPACE.bytes, usedforsecurity=False)  # RFC 4122's name-based hash
_VARIANT = {digit: format(int(digit, 16) & 0x3 | 0x8, "x") for digit in "0123456789abcdef"}


def message_id(tenant: str, key: NoticeKey) -> str:
    """``str(uuid.uuid5(_NAMESPACE, f"{tenant}|{key.text()}"))``, written from the SHA-1's
    hex digits (version 5, the RFC 4122 variant): ~1 µs a record against ~3.9 µs through
    ``UUID``."""
    sha = _SEEDED.copy()
    sha.update(f"{tenant}|{key.text()}".encode())
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def subject(key: NoticeKey) -> str:
    """The ordering key: the property (不動産番号), or the receipt when the notice has none."""
    return key.real_estate_number or f"{key.receipt_date}-{key.receipt_number}"


def wrap(service_xml: bytes, tenant: str, key: NoticeKey, issued_at: datetime) -> bytes:
    header = (
        f"<env:Header><env:messageId>{message_id(tenant, key)}</env:messageId>"
        f"<env:service><env:name>{SERVICE}</env:name><env:version>1.0</env:version></env:service>"
        f"<env:client><env:tenant>{tenant}</env:tenant><env:system>{SENDER}</env:system>"
        f"</env:client><env:subject>{subject(key)}</env:subject>"
        f"<env:issuedAt>{issued_at.isoformat(timespec='seconds')}</env:issuedAt>"
        "<env:protocolVersion>1.0</env:protocolVersion></env:Header>"
    )
    return (
        f'<env:PlatformMessage xmlns:env="{NS_ENVELOPE}">{header}'.encode()
        + service_xml
        + b"</env:PlatformMessage>"
    )
