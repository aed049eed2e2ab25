"""Identities: API keys, and the Authenticate and Authorize stages (DESIGN §1 stages 2, 5).

Two ways to recognise a caller, SOAP and REST alike: an API key (``Authorization: Bearer``;
only a salted scrypt hash is configured), or, for closed networks (閉域網), the source address
against each system's allowlist combined with the Header's client system. Authorization is
default deny per system × service × direction × tenant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bus.config.loader import REPLY_SUFFIX, is_inquiry, request_services
from bus.config.models import Direction
from bus.errors import make_finding
from bus.pipeline import Finding, Identity, Message, StageName

if TYPE_CHECKING:
    from bus.config.snapshots import ConfigSource

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES, _HASH_BYTES = 16, 32
_MAX_N = 2**20  # refuse absurd work factors in a configured hash
_HASH_FORMAT = re.compile(
    r"^scrypt\$(?P<n>[0-9]+)\$(?P<r>[0-9]+)\$(?P<p>[0-9]+)\$"
    r"(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)$"
)

HEADER_PATH = "/PlatformMessage/Header"


# --- API keys -------------------------------------------------------------------------------


def new_api_key(system: str) -> str:
    """A fresh key ``rk_<system>_<random>``; shown once, only its hash is configured."""
    return f"rk_{system}_{secrets.token_urlsafe(32)}"


def _scrypt(key: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        key.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 2**20,
        dklen=length,
    )


def hash_api_key(key: str) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64``: salted and memory-hard, never a plain digest."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(key, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _HASH_BYTES)
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


@dataclass(frozen=True, slots=True)
class _ParsedHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(stored: str) -> _ParsedHash | None:
    match = _HASH_FORMAT.fullmatch(stored)
    if match is None:
        return None
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        return None
    try:
        salt = base64.b64decode(match["salt"], validate=True)
        digest = base64.b64decode(match["hash"], validate=True)
    except ValueError:
        return None
    return _ParsedHash(n, r, p, salt, digest) if salt and digest else None


def is_api_key_hash(value: str) -> bool:
    """Whether ``value`` is a hash :func:`hash_api_key` could have written."""
    return _parse_hash(value) is not None


def verify_api_key(key: str, stored: str) -> bool:
    """Constant-time comparison of the key's scrypt hash with the stored one."""
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    candidate = _scrypt(key, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


# --- stages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthenticateStage:
    """Which connected system is calling: by API key when one is presented (a wrong key is
    refused, never retried by address), else by source address."""

    provider: ConfigSource
    name: StageName = StageName.AUTHENTICATE

    def __call__(self, message: Message) -> Message:
        if message.identity is not None:
            return message  # established by an in-process adapter (a system's hot folder)
        index = self.provider.current().index
        if message.api_key is not None:
            system = index.system_for_api_key(message.api_key)
            if system is not None:
                message.identity = Identity(systems=frozenset({system}), method="api_key")
        elif message.source_address is not None:
            systems = index.systems_for_address(message.source_address)
            if systems:
                message.identity = Identity(systems=systems, method="address")
        if message.identity is None:
            message.add_findings([make_finding("RK-AUT001", path="/")])
        return message


@dataclass(frozen=True, slots=True)
class AuthorizeStage:
    """May this system send this service for this tenant? Runs after Validate (the Header is
    parsed). A ``…Reply`` is never accepted inbound: replies return through request-reply."""

    provider: ConfigSource
    name: StageName = StageName.AUTHORIZE

    def __call__(self, message: Message) -> Message:
        finding = self._refusal(message)
        if finding is not None:
            message.add_findings([finding])
        return message

    def _refusal(self, message: Message) -> Finding | None:
        identity, envelope = message.identity, message.envelope
        if identity is None:
            return make_finding("RK-AUT001", path="/")
        if envelope is None:
            return make_finding("RK-AUT002", path=f"{HEADER_PATH}/client/system", actual="")
        index = self.provider.current().index
        system, tenant_code = envelope.client.system, envelope.client.tenant
        if system not in identity.systems:
            return make_finding("RK-AUT002", path=f"{HEADER_PATH}/client/system", actual=system)
        tenant = index.tenant(tenant_code)
        if tenant is None or not tenant.enabled:
            return make_finding(
                "RK-AUT005", path=f"{HEADER_PATH}/client/tenant", actual=tenant_code
            )
        if not index.serves(system, tenant_code):
            return make_finding(
                "RK-AUT003",
                path=f"{HEADER_PATH}/client/tenant",
                actual=system,
                expected=tenant_code,
            )
        service = message.service or envelope.service
        direction = Direction.INQUIRE if is_inquiry(service) else Direction.SEND
        inbound = service in request_services() and not service.endswith(REPLY_SUFFIX)
        if not inbound or not index.allowed(system, direction, service, tenant_code):
            return make_finding(
                "RK-AUT004",
                path=f"{HEADER_PATH}/service/name",
                actual=system,
                expected=f"{direction.value} {service} ({tenant_code})",
            )
        return None
