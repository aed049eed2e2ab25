"""Feed cursors: opaque to consumers, a position in one (tenant, service) stream inside.

The position is the Message Store's primary key (monotonically increasing, the same in every
process and after a restart), so a cursor survives restarts and scale-out and reading again
from an old cursor returns the same messages. The cursor names its tenant and service: one
presented to another feed is refused (it never positions a reader in another tenant's stream).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

_VERSION = "1"
_TEXT = re.compile(
    r"^1\.(?P<tenant>[0-9]{6})\.(?P<service>[A-Za-z0-9]{1,64})\.(?P<pk>[0-9]{1,19})$"
)


class CursorError(ValueError):
    """The cursor is not one this hub wrote, or belongs to another feed."""


@dataclass(frozen=True, slots=True)
class Cursor:
    tenant: str
    service: str
    position: int  # the last message primary key the reader has seen (0: the beginning)

    def encode(self) -> str:
        text = f"{_VERSION}.{self.tenant}.{self.service}.{self.position}"
        return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, value: str, *, tenant: str, service: str) -> Cursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        except (ValueError, binascii.Error, UnicodeError):
            raise CursorError(value) from None
        match = _TEXT.fullmatch(text)
        if match is None or match["tenant"] != tenant or match["service"] != service:
            raise CursorError(value)
        return cls(tenant, service, int(match["pk"]))

    @classmethod
    def start(cls, tenant: str, service: str) -> Cursor:
        return cls(tenant, service, 0)
