"""Dead letters (redeliver, discard), destinations (pause, resume), routes and connected
systems (read-only), import batches and health. Every action is audited by the operation it
calls (bus/dispatch/operations.py: tenant chains and the admin chain)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from adapters.console.access import (
    actor,
    config_index,
    forbidden,
    require_operate,
    require_view,
    tenant_scope,
    visible_tenants,
)
from adapters.console.imports_view import batch_csv, find_batch, list_batches
from adapters.console.rendering import ConsoleRoute, render
from adapters.console.session import (
    ConsoleRefusal,
    hub_of,
    posted_form,
    signed_in,
    stated_reason,
)
from bus.dispatch import operations
from bus.errors import make_finding
from bus.observability.readiness import readiness
from bus.security.operators import Operator, Permission
from bus.store.admin_audit import record_admin_action
from bus.store.audit import utc
from bus.store.models import Delivery, DeliveryState, DestinationState

DONE_KEYS = frozenset({"redeliver", "discard", "pause", "resume"})
router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _done(request: Request) -> tuple[str, int] | None:
    key, count = request.query_params.get("done", ""), request.query_params.get("n", "0")
    return (key, int(count)) if key in DONE_KEYS and count.isdigit() else None


#: The most dead letters one page shows (the page says how many there are in all).
DEAD_SHOWN = 1000


def _dead_counts(session: Session, scope: frozenset[str] | None) -> dict[str, int]:
    """The operator's dead letters per destination."""
    query = select(Delivery.destination, func.count()).where(
        Delivery.state == DeliveryState.DEAD.value
    )
    if scope is not None:
        query = query.where(Delivery.tenant.in_(sorted(scope)))
    rows = session.execute(query.group_by(Delivery.destination))
    return {destination: int(count) for destination, count in rows}


def _first_dead(
    session: Session, scope: frozenset[str] | None, destination: str | None
) -> list[operations.DeadLetter]:
    """The first ``DEAD_SHOWN`` of the operator's dead letters (oldest first). The first of
    all tenants together are among each tenant's first."""
    if scope is None:
        return operations.list_dead(session, destination=destination, limit=DEAD_SHOWN)
    every = [
        dead
        for tenant in sorted(scope)
        for dead in operations.list_dead(
            session, tenant=tenant, destination=destination, limit=DEAD_SHOWN
        )
    ]
    return sorted(every, key=lambda dead: dead.id)[:DEAD_SHOWN]


@router.get("/console/dead-letters")
def dead_letters_page(request: Request, destination: str = "") -> Response:
    """At most ``DEAD_SHOWN`` at once, with how many there are in all; filtered by
    destination system to work through a larger backlog (an unknown one: RK-CON007)."""
    operator = signed_in(request)
    scope = tenant_scope(operator)
    seen = {system.id for system in _systems_seen_by(request, operator)}
    with hub_of(request).store.sessions() as session:
        counts = _dead_counts(session, scope)
        choices = sorted(seen | counts.keys())
        if destination and destination not in choices:
            finding = make_finding(
                "RK-CON007",
                path="/destination",
                actual=destination[:40],
                expected=", ".join(choices),
            )
            dead, total = [], 0
        else:
            finding = None
            dead = _first_dead(session, scope, destination or None)
            total = counts.get(destination, 0) if destination else sum(counts.values())
    return render(
        request,
        "dead_letters.html",
        status=400 if finding else 200,
        finding=finding,
        dead=dead,
        total=total,
        destination=destination if finding is None else "",
        choices=[(choice, counts.get(choice, 0)) for choice in choices],
        done=_done(request),
    )


_MAX_KEY = 2**63 - 1  # the largest key a database holds (a larger one overflows the query)


def _delivery_ids(values: Sequence[str]) -> list[int]:
    ids = sorted({n for v in values if v.isascii() and v.isdigit() and (n := int(v)) <= _MAX_KEY})
    if not ids:
        raise ConsoleRefusal(400, make_finding("RK-CON003", path="/delivery"))
    return ids


def _act_on_dead(
    request: Request, operator: Operator, action: str, ids: list[int], reason: str
) -> int:
    act: Callable[..., list[int]] = (
        operations.redeliver if action == "redeliver" else operations.discard
    )
    hub = hub_of(request)
    with hub.store.sessions.begin() as session:
        for tenant in set(session.scalars(select(Delivery.tenant).where(Delivery.id.in_(ids)))):
            require_operate(operator, tenant)
        changed = act(session, ids, reason=reason, actor=actor(operator))
    if changed and action == "redeliver":
        hub.wakeups.notify(())
    return len(changed)


@router.post("/console/dead-letters")
async def dead_letters_action(request: Request) -> Response:
    form = await posted_form(request)
    operator = await run_in_threadpool(signed_in, request)
    action = form.one("action")
    if action not in {"redeliver", "discard"}:
        raise ConsoleRefusal(400, make_finding("RK-CON003", path="/action"))
    ids = _delivery_ids(form.all("delivery"))
    reason = stated_reason(form)
    count = await run_in_threadpool(_act_on_dead, request, operator, action, ids, reason)
    params = {"destination": form.one("destination")} if form.one("destination") else {}
    query = urlencode({**params, "done": action, "n": count})
    return RedirectResponse(f"/console/dead-letters?{query}", status_code=303)


def _destination_rows(
    session: Session, systems: list[Any], scope: frozenset[str] | None
) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], int] = {}
    query = select(Delivery.destination, Delivery.state, func.count()).where(
        Delivery.state.in_([DeliveryState.PENDING.value, DeliveryState.DEAD.value])
    )
    if scope is not None:
        query = query.where(Delivery.tenant.in_(sorted(scope)))
    for destination, state, count in session.execute(
        query.group_by(Delivery.destination, Delivery.state)
    ):
        counts[(destination, state)] = int(count)
    states = {row.system: row for row in session.scalars(select(DestinationState))}
    now = datetime.now(UTC)
    return [
        {
            "system": system,
            "state": states.get(system.id),
            "held_until": _held_until(states.get(system.id), now),
            "pending": counts.get((system.id, DeliveryState.PENDING.value), 0),
            "dead": counts.get((system.id, DeliveryState.DEAD.value), 0),
        }
        for system in systems
    ]


def _held_until(state: DestinationState | None, now: datetime) -> datetime | None:
    """The end of a hold the destination asked for (``Retry-After``) while it lasts."""
    if state is None or state.held_until is None or utc(state.held_until) <= now:
        return None
    return utc(state.held_until)


def _systems_seen_by(request: Request, operator: Operator) -> list[Any]:
    index = config_index(request)
    mine = set(visible_tenants(operator, index))
    return [s for s in index.config.systems if index.served_tenants(s.id) & mine]


@router.get("/console/destinations")
def destinations_page(request: Request) -> Response:
    operator = signed_in(request)
    systems = _systems_seen_by(request, operator)
    with hub_of(request).store.sessions() as session:
        rows = _destination_rows(session, systems, tenant_scope(operator))
    return render(request, "destinations.html", rows=rows, done=_done(request))


@router.post("/console/destinations/{system}/{action}")
async def destination_action(request: Request, system: str, action: str) -> Response:
    """Pausing a system affects every tenant it serves, so it takes the right to operate for
    each of them (in practice: hub staff, or the operator of a town's own system)."""
    form = await posted_form(request)
    operator = await run_in_threadpool(signed_in, request)
    index = config_index(request)
    if action not in {"pause", "resume"} or index.system(system) is None:
        raise ConsoleRefusal(404)
    served = sorted(index.served_tenants(system))
    if not set(served) & set(visible_tenants(operator, index)):
        raise ConsoleRefusal(404)
    for tenant in served:
        if not operator.may(Permission.OPERATE, tenant):
            raise ConsoleRefusal(403, forbidden(operator, tenant))
    reason = stated_reason(form)
    hub = hub_of(request)

    def apply() -> None:
        with hub.store.sessions.begin() as session:
            change = operations.pause if action == "pause" else operations.resume
            change(session, system, reason=reason, actor=actor(operator), tenants=served)
        if action == "resume":
            hub.wakeups.notify([system])
        else:  # nothing reaches the system once the page says it is paused
            lease = hub.settings.dispatch_lease_seconds
            operations.wait_for_sends(hub.store.sessions, system, timeout=lease)

    await run_in_threadpool(apply)
    return RedirectResponse(f"/console/destinations?done={action}&n=1", status_code=303)


@router.get("/console/configuration")
def configuration_page(request: Request) -> Response:
    operator = signed_in(request)
    index = config_index(request)
    mine = set(visible_tenants(operator, index))
    routes = [
        route for route in index.config.routes if route.tenants == "*" or set(route.tenants) & mine
    ]
    return render(
        request,
        "configuration.html",
        routes=routes,
        systems=_systems_seen_by(request, operator),
        config_version=hub_of(request).config.current().version,
    )


@router.get("/console/imports")
def imports_page(request: Request) -> Response:
    operator = signed_in(request)
    batches = list_batches(hub_of(request).settings.data_dir, tenant_scope(operator))
    return render(request, "imports.html", batches=batches)


@router.get("/console/imports/{name}/{report}.csv")
async def import_report(request: Request, name: str, report: str) -> Response:
    """The error report (viewers too) or the 評価変更リスト (names and addresses of owners:
    operators only, audited)."""
    operator = await run_in_threadpool(signed_in, request)
    hub = hub_of(request)
    batch = find_batch(hub.settings.data_dir, name)
    if batch is None or report not in {"errors", "list"}:
        raise ConsoleRefusal(404)
    require_view(operator, batch.tenant)
    if report == "list":
        require_operate(operator, batch.tenant)

        def audited() -> None:
            with hub.store.sessions.begin() as session:
                detail = {"batch": batch.name, "tenant": batch.tenant, "report": report}
                record_admin_action(session, actor(operator), "import.download", detail)

        await run_in_threadpool(audited)
    data = await run_in_threadpool(batch_csv, hub.settings.data_dir, batch, report)
    filename = f"{report}-{batch.name}.csv"
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/console/health")
def health_page(request: Request) -> Response:
    signed_in(request)
    hub = hub_of(request)
    checks = readiness(hub)
    return render(
        request,
        "health.html",
        checks=checks,
        config_version=hub.config.current().version,
    )
