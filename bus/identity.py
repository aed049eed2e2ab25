"""Identities: the Authenticate and Authorize stages (DESIGN §1 stages 2, 5).

Ways to recognise a caller (docs/security.md): a TLS client certificate (mutual TLS), an API
key (``Authorization: Bearer``; only salted scrypt hashes are kept), a WS-Security
UsernameToken (SOAP), or, for closed networks (閉域網), the source address against each
system's allowlist combined with the Header's client system. Authorization is default deny
per system × service × direction × tenant, after the system's rate limit.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from lxml import etree

from bus.catalogue import XML_LANG, XS
from bus.config.loader import REPLY_SUFFIX, is_inquiry, request_services
from bus.config.models import Direction
from bus.errors import make_finding
from bus.kdf import hash_secret as hash_api_key
from bus.kdf import is_secret_hash as is_api_key_hash
from bus.kdf import verify_secret as verify_api_key
from bus.pipeline import Finding, Identity, Message, StageName
from bus.resources import schemas_dir
from bus.security.api_keys import is_issued_key

if TYPE_CHECKING:
    from bus.config.snapshots import ConfigSource
    from bus.security.api_keys import ApiKeyRegistry
    from bus.security.rate_limit import RateLimiter
    from bus.security.wsse import UsernameTokenVerifier

HEADER_PATH = "/PlatformMessage/Header"
_DOCUMENTATION = f"{{{XS}}}annotation/{{{XS}}}documentation"


# --- API keys -------------------------------------------------------------------------------


def new_api_key(system: str) -> str:
    """A fresh key ``rk_<system>_<random>``; shown once, only its hash is configured."""
    return f"rk_{system}_{secrets.token_urlsafe(32)}"


RETRY_AFTER = "retry_after="


def rate_limited(system: str, seconds: int) -> Finding:
    """RK-AUT010; ``detail`` carries the seconds for ``Retry-After`` (see :func:`retry_after`)."""
    return make_finding("RK-AUT010", path="/", actual=system, detail=f"{RETRY_AFTER}{seconds}")


#: Findings whose ``detail`` says how long the caller should wait: its own rate limit, and an
#: inquiry's provider that asked for ``Retry-After`` (:mod:`bus.dispatch.reply`)
WAIT_CODES = frozenset({"RK-AUT010", "RK-RPL004"})


def retry_after(findings: Iterable[Finding]) -> int | None:
    """The seconds the caller should wait, when one of :data:`WAIT_CODES` is among
    ``findings`` (its ``detail`` is ``retry_after=<seconds>``)."""
    for finding in findings:
        if finding.code in WAIT_CODES and (finding.detail or "").startswith(RETRY_AFTER):
            return int((finding.detail or "")[len(RETRY_AFTER) :])
    return None


# --- stages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthenticateStage:
    """Which connected system is calling. The first credential presented decides, and a wrong
    one is refused, never retried by address: a TLS client certificate mapped to a system,
    else an API key (issued into the database, else configured), else a WS-Security
    UsernameToken, else the source address. ``keys``/``tokens``: the database-backed checks
    (absent in tools that run without a store)."""

    provider: ConfigSource
    keys: ApiKeyRegistry | None = None
    tokens: UsernameTokenVerifier | None = None
    name: StageName = StageName.AUTHENTICATE

    def __call__(self, message: Message) -> Message:
        if message.identity is not None:
            return message  # established by an in-process adapter (a system's hot folder)
        outcome = self._identify(message)
        if isinstance(outcome, Identity):
            message.identity = outcome
        else:
            message.add_findings([outcome or make_finding("RK-AUT001", path="/")])
        return message

    def _identify(self, message: Message) -> Identity | Finding | None:
        index = self.provider.current().index
        if message.client_certificate is not None:
            fingerprint = hashlib.sha256(message.client_certificate).hexdigest()
            system = index.system_for_certificate(fingerprint)
            if system is not None:
                return Identity(systems=frozenset({system}), method="certificate")
        if message.api_key is not None:
            system = self._system_for_key(message.api_key)
            return Identity(frozenset({system}), "api_key") if system is not None else None
        if message.username_token is not None:
            if self.tokens is None:
                return None
            verified = self.tokens.verify(message.username_token)
            if isinstance(verified, Finding):
                return verified
            return Identity(systems=frozenset({verified}), method="username_token")
        if message.source_address is not None:
            systems = index.systems_for_address(message.source_address)
            if systems:
                return Identity(systems=systems, method="address")
        return None

    def _system_for_key(self, key: str) -> str | None:
        if self.keys is not None and is_issued_key(key):
            return self.keys.system_for(key)
        return self.provider.current().index.system_for_api_key(key)


@dataclass(frozen=True, slots=True)
class AuthorizeStage:
    """May this system send this service for this tenant? Runs after Validate (the Header is
    parsed). A ``…Reply`` is never accepted inbound: replies return through request-reply."""

    provider: ConfigSource
    limiter: RateLimiter | None = None
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
        limit = configured.rate_limit if (configured := index.system(system)) else None
        if self.limiter is not None and limit is not None:
            wait = self.limiter.admit(system, limit)
            if wait is not None:
                return rate_limited(system, wait)
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
            return service_refused(
                f"{HEADER_PATH}/service/name", system, direction, service, tenant_code
            )
        return None


#: a direction of an access rule, as RK-AUT004 names it in Japanese (送信権限, 照会権限)
_DIRECTIONS_JA = {Direction.SEND: "送信", Direction.INQUIRE: "照会", Direction.RECEIVE: "受信"}


@lru_cache(maxsize=64)  # bounded: the name comes from the caller's Header
def service_names(service: str) -> tuple[str, str]:
    """The service's Japanese and English names from its element's annotation in its own
    schema file (登記済通知, Registration notice: one small file read, once per service and
    process); the service id itself for one the schemas do not have."""
    path = schemas_dir() / "services" / f"{service}.xsd"
    element = None
    if service.isidentifier() and path.is_file():
        schema = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
        element = schema.find(f"{{{XS}}}element[@name='{service}']")
    names = {
        doc.get(XML_LANG): (doc.text or "").strip()
        for doc in (() if element is None else element.iterfind(_DOCUMENTATION))
    }
    return names.get("ja") or service, names.get("en") or service


def service_refused(
    path: str, system: str, direction: Direction, service: str, tenant: str
) -> Finding:
    """RK-AUT004: ``system`` may not ``direction`` ``service`` for ``tenant``, the service
    and the direction named in the reader's language."""
    service_ja, service_en = service_names(service)
    return make_finding(
        "RK-AUT004",
        path=path,
        actual=system,
        tenant=tenant,
        service=service,
        service_ja=service_ja,
        service_en=service_en,
        direction_ja=_DIRECTIONS_JA[direction],
        direction_en=direction.value,
    )


__all__ = [
    "AuthenticateStage",
    "AuthorizeStage",
    "hash_api_key",
    "is_api_key_hash",
    "new_api_key",
    "rate_limited",
    "retry_after",
    "service_names",
    "service_refused",
    "verify_api_key",
]
