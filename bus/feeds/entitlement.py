"""Who may read which feed: exactly the systems a pushed delivery would go to.

A system reads the feed of a (service, tenant) when the route for them names it as a
subscriber and an access rule lets it receive the service for a tenant it serves (default
deny, the same look-ups as the Route stage's). A subscriber's ``when`` conditions are applied
to each message as it is read (:mod:`bus.feeds.reader`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.config.index import ConfigIndex
from bus.config.loader import is_inquiry, request_services
from bus.config.models import Condition, Direction, System
from bus.errors import make_finding
from bus.pipeline import Finding


class FeedRefused(PermissionError):
    """A feed request refused with a coded finding (not entitled, bad parameter…)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


@dataclass(frozen=True, slots=True)
class Entitlement:
    """``system`` may read ``service`` of ``tenant``; a message is its when any one of the
    ``conditions`` alternatives holds (an empty alternative always holds)."""

    system: System
    tenant: str
    service: str
    conditions: tuple[tuple[Condition, ...], ...]

    @property
    def unconditional(self) -> bool:
        return any(not alternative for alternative in self.conditions)


def entitlement(index: ConfigIndex, system_id: str, tenant: str, service: str) -> Entitlement:
    """Raises :class:`FeedRefused` (RK-FED002) with one answer for every reason (unknown
    tenant, tenant disabled, tenant not served, no access rule, not a subscriber), so the
    refusal reveals nothing about other tenants; its text names a disabled tenant among the
    reasons, so staff of a town taken out of service are not sent looking for a rule."""
    refusal = FeedRefused(
        make_finding("RK-FED002", path="/", actual=system_id, tenant=tenant, service=service)
    )
    system = index.system(system_id)
    if system is None or service not in request_services() or is_inquiry(service):
        raise refusal
    tenant_entry = index.tenant(tenant)
    if tenant_entry is None or not tenant_entry.enabled:
        raise refusal
    if not index.allowed(system_id, Direction.RECEIVE, service, tenant):
        raise refusal
    route = index.route(service, tenant)
    alternatives = tuple(
        subscriber.when
        for subscriber in (route.subscribers if route is not None else ())
        if subscriber.system == system_id
    )
    if not alternatives:
        raise refusal
    return Entitlement(system, tenant, service, alternatives)
