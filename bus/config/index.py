"""Look-ups over one configuration version, built once and shared by every request.

Default deny: :meth:`ConfigIndex.allowed` is true only for what an access rule grants, for a
tenant the system serves. Grants, routes and retention are precomputed into dicts and sets;
API keys verified once (scrypt is deliberately slow) are remembered by their SHA-256 for this
version only, so a key removed by a new configuration stops working at the next reload.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from dataclasses import dataclass
from datetime import timedelta

from bus.config.models import (
    ALL,
    AccessRule,
    Direction,
    HubConfig,
    Retention,
    Route,
    System,
    Tenant,
)
from bus.identity import verify_api_key

DEFAULT_RETENTION = Retention().keep
_CACHE_LIMIT = 4096  # remembered keys/addresses per version; bounded against floods

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return address


@dataclass(frozen=True, slots=True)
class IdleDestination:
    """A route's subscriber (or provider) that may receive its service for none of the
    tenants the route applies to: it never gets anything through that route."""

    service: str
    tenants: str  # the route's scope: "*" or its codes, comma-separated
    system: str


class ConfigIndex:
    """Tenants, systems, grants, routes and retention of one :class:`HubConfig`."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self._tenants = {tenant.code: tenant for tenant in config.tenants}
        self._systems = {system.id: system for system in config.systems}
        self._served = {
            system.id: (
                frozenset(self._tenants if system.tenants == ALL else system.tenants)
                | frozenset(t.code for t in config.tenants if system.id in t.joins)
            )
            & frozenset(self._tenants)
            for system in config.systems
        }
        self._certificates = {
            fingerprint: system.id
            for system in config.systems
            for fingerprint in system.credentials.certificate_fingerprints
        }
        self._networks: list[tuple[IpNetwork, str]] = [
            (ipaddress.ip_network(value, strict=False), system.id)
            for system in config.systems
            for value in system.credentials.allow_addresses
        ]
        self._grants = frozenset(self._expand_grants(config.access))
        self._routes: dict[tuple[str, str], Route] = {}
        for route in config.routes:
            for scope in (ALL,) if route.tenants == ALL else route.tenants:
                self._routes.setdefault((route.service, scope), route)
        self._retention = {entry.service: entry.keep for entry in config.retention}
        self._lock = threading.Lock()
        self._keys: dict[str, str | None] = {}
        self._addresses: dict[str, frozenset[str]] = {}

    def _expand_grants(self, rules: tuple[AccessRule, ...]) -> set[tuple[str, str, str, str]]:
        grants: set[tuple[str, str, str, str]] = set()
        for rule in rules:
            served = self._served.get(rule.system, frozenset())
            tenants = served if rule.tenants == ALL else served & frozenset(rule.tenants)
            for direction in Direction:
                for service in getattr(rule, direction.value):
                    grants.update(
                        (rule.system, direction.value, service, tenant) for tenant in tenants
                    )
        return grants

    def tenant(self, code: str) -> Tenant | None:
        return self._tenants.get(code)

    def system(self, system_id: str) -> System | None:
        return self._systems.get(system_id)

    def serves(self, system_id: str, tenant: str) -> bool:
        """Whether the system acts for this (declared) tenant."""
        return tenant in self._served.get(system_id, frozenset())

    def systems_for_address(self, address: str) -> frozenset[str]:
        """Every system whose ``allow_addresses`` holds this source address."""
        found = self._addresses.get(address)
        if found is not None:
            return found
        parsed = _address(address)
        found = frozenset(
            system
            for network, system in self._networks
            if parsed is not None and parsed.version == network.version and parsed in network
        )
        with self._lock:
            if len(self._addresses) < _CACHE_LIMIT:
                self._addresses[address] = found
        return found

    def system_for_api_key(self, key: str) -> str | None:
        """The system holding this key (``rk_<system>_<random>``), or ``None``.

        Only the systems whose id the key's prefix names are tried, so a random key costs no
        scrypt at all."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        if digest in self._keys:
            return self._keys[digest]
        found = next(
            (
                system.id
                for system in self.config.systems
                if key.startswith(f"rk_{system.id}_")
                and any(verify_api_key(key, h) for h in system.credentials.api_key_hashes)
            ),
            None,
        )
        with self._lock:
            if len(self._keys) < _CACHE_LIMIT:
                self._keys[digest] = found
        return found

    def system_for_certificate(self, fingerprint: str) -> str | None:
        """The system whose ``certificate_fingerprints`` holds this SHA-256 (hex)."""
        return self._certificates.get(fingerprint)

    def served_tenants(self, system_id: str) -> frozenset[str]:
        return self._served.get(system_id, frozenset())

    def allowed(self, system: str, direction: Direction, service: str, tenant: str) -> bool:
        """Default deny: true only when a rule grants it and the system serves the tenant."""
        return (system, direction.value, service, tenant) in self._grants

    def route(self, service: str, tenant: str) -> Route | None:
        """The tenant's own route for the service, else the ``"*"`` one."""
        return self._routes.get((service, tenant)) or self._routes.get((service, ALL))

    def idle_destinations(self) -> list[IdleDestination]:
        """Destinations of routes that can receive for none of the route's tenants (not
        serving them, or without a ``receive`` grant there). Valid configuration — routing
        skips them per tenant (default deny) — but most likely a mistake worth a warning."""
        idle: list[IdleDestination] = []
        for route in self.config.routes:
            scope = ALL if route.tenants == ALL else ",".join(route.tenants)
            applies = [
                tenant
                for tenant in self._tenants
                if self.route(route.service, tenant) is route
                and (route.tenants == ALL or tenant in route.tenants)
            ]
            systems = [s.system for s in route.subscribers] + (
                [route.provider] if route.provider else []
            )
            idle.extend(
                IdleDestination(route.service, scope, system)
                for system in dict.fromkeys(systems)
                if applies
                and not any(
                    self.allowed(system, Direction.RECEIVE, route.service, t) for t in applies
                )
            )
        return idle

    def retention(self, service: str) -> timedelta:
        return self._retention.get(service) or self._retention.get(ALL) or DEFAULT_RETENTION
