"""Who sees what: every console query is limited to the tenants the signed-in operator acts
for, and a message, dead letter or batch of another tenant is answered 404 (its existence is
not disclosed)."""

from __future__ import annotations

from starlette.requests import Request

from adapters.console.session import ConsoleRefusal, hub_of
from bus.config.index import ConfigIndex
from bus.pipeline import Finding
from bus.security.operators import ALL_TENANTS, Operator, Permission, refused


def config_index(request: Request) -> ConfigIndex:
    return hub_of(request).config.current().index


def tenant_scope(operator: Operator) -> frozenset[str] | None:
    """The tenants to filter by; None for hub staff (``*``), who see every tenant."""
    return None if ALL_TENANTS in operator.tenants else operator.tenants


def visible_tenants(operator: Operator, index: ConfigIndex) -> list[str]:
    every = frozenset(tenant.code for tenant in index.config.tenants)
    return sorted(operator.visible_tenants(every))


def require_view(operator: Operator, tenant: str) -> None:
    if not operator.may(Permission.VIEW, tenant):
        raise ConsoleRefusal(404)


def require_operate(operator: Operator, tenant: str) -> None:
    """404 for a tenant the operator cannot see, 403 (RK-AUT011) for one it only views."""
    require_view(operator, tenant)
    if not operator.may(Permission.OPERATE, tenant):
        raise ConsoleRefusal(403, forbidden(operator, tenant))


def forbidden(operator: Operator, tenant: str) -> Finding:
    return refused(operator, Permission.OPERATE, tenant)


def actor(operator: Operator) -> str:
    return f"console:{operator.username}"
