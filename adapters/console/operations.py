"""Destinations (pause, resume), routes and connected systems (read-only), import batches
and health (dead letters: adapters/console/dead_letters.py). Every action is audited by the
operation it calls (bus/dispatch/operations.py: tenant chains and the admin chain)."""

from __future__ import annotations

from datetime import datetime
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
from adapters.console.inputs import duration, per_second, refused_per_second
from adapters.console.rendering import ConsoleRoute, render
from adapters.console.session import (
    ConsoleRefusal,
    hub_of,
    posted_form,
    signed_in,
    stated_reason,
)
from bus.dispatch import operations
from bus.observability.readiness import readiness
from bus.security.operators import Operator, Permission
from bus.store.admin_audit import record_admin_action
from bus.store.audit import utc
from bus.store.clock import database_now
from bus.store.models import Delivery, DeliveryState, DestinationState

DONE_KEYS = frozenset({"pause", "resume"})
router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _done(request: Request) -> tuple[str, int] | None:
    key, count = request.query_params.get("done", ""), request.query_params.get("n", "0")
    return (key, int(count)) if key in DONE_KEYS and count.isdigit() else None


def _paced_resume(request: Request) -> dict[str, str] | None:
    """A paced resume's result, read back from the redirect: the destination, how many were
    given a due time, the pace and how long they take (None: no paced resume, or altered)."""
    query = request.query_params
    count, pace = query.get("due", ""), per_second(query.get("per_second", ""))
    if query.get("done") != "resume" or not count.isdigit() or pace is None:
        return None
    key, number = duration(int(count), pace)
    return {
        "system": query.get("system", "")[:40],
        "n": f"{int(count):,}",
        "per_second": f"{pace:g}",
        "duration_key": key,
        "duration": number,
    }


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
    now = database_now(session.connection())  # holds are written on the store's clock
    return [
        {
            "system": system,
            "state": states.get(system.id),
            "held_until": _held_until(states.get(system.id), now),
            "held_label": _held_label(states.get(system.id)),
            "pending": counts.get((system.id, DeliveryState.PENDING.value), 0),
            "dead": counts.get((system.id, DeliveryState.DEAD.value), 0),
        }
        for system in systems
    ]


def _held_until(state: DestinationState | None, now: datetime) -> datetime | None:
    """The end of a hold (``Retry-After``, or the circuit breaker's) while it lasts."""
    if state is None or state.held_until is None or utc(state.held_until) <= now:
        return None
    return utc(state.held_until)


def _held_label(state: DestinationState | None) -> str:
    """Whose wish a hold is: the destination's (``Retry-After``), or the circuit breaker's
    for a destination that could not be reached (bus/dispatch/worker.py)."""
    reason = state.held_reason if state is not None else None
    return "held_unreachable" if reason and reason.startswith("unreachable") else "held"


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
    return render(
        request,
        "destinations.html",
        rows=rows,
        done=_done(request),
        paced=_paced_resume(request),
    )


@router.post("/console/destinations/{system}/{action}")
async def destination_action(request: Request, system: str, action: str) -> Response:
    """Pausing a system affects every tenant it serves, so it takes the right to operate for
    each of them (in practice: hub staff, or the operator of a town's own system). A resume
    may be paced (``per_second``, as ``renkei destinations resume --per-second``: its waiting
    deliveries given due times 1/N s apart, the oldest first; RK-CON007 for no such pace)."""
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
    typed = form.one("per_second") if action == "resume" else ""
    refused = refused_per_second(typed)
    if refused is not None:
        raise ConsoleRefusal(400, refused)
    pace = per_second(typed) if typed.strip() else None
    hub = hub_of(request)

    def apply() -> int:
        with hub.store.sessions.begin() as session:
            if action == "pause":
                operations.pause(
                    session, system, reason=reason, actor=actor(operator), tenants=served
                )
                due = 0
            else:
                due = operations.resume(
                    session,
                    system,
                    reason=reason,
                    actor=actor(operator),
                    tenants=served,
                    spacing=operations.pace(pace),
                )
        if action == "resume":
            hub.wakeups.notify([system])
        else:  # nothing reaches the system once the page says it is paused
            lease = hub.settings.dispatch_lease_seconds
            operations.wait_for_sends(hub.store.sessions, system, timeout=lease)
        return due

    due = await run_in_threadpool(apply)
    query = {"done": action, "n": "1"}
    if pace is not None:
        query |= {"system": system, "due": str(due), "per_second": f"{pace:g}"}
    return RedirectResponse(f"/console/destinations?{urlencode(query)}", status_code=303)


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
