"""開示請求・提供記録: one resident's trail (bus/store/trail.py) for the staff who answer a
disclosure request or a 支援措置 question, on a page or as the CLI's CSV.

The 宛名番号 is POSTed, never in a URL (access logs, browser history); the page that answers
carries it back only sealed for this session (the search's seal, adapters/console/messages.py)
for the CSV download. Every lookup, each CSV download included, is recorded on the admin chain
(``message.trail``, masked and as a keyed pseudonym) by the same call the CLI makes. Who may:
operators and admins of the town (those who may read personal data unmasked), hub staff (``*``)
for every town; viewers may not (403, RK-AUT011).
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from adapters.console.access import actor, config_index, forbidden, require_operate
from adapters.console.dates import DateRefused, day_start, parse_day
from adapters.console.messages import SEALED_SUBJECT, open_subject, seal_subject
from adapters.console.rendering import ConsoleRoute, render
from adapters.console.session import ConsoleRefusal, Form, hub_of, posted_form, signed_in
from bus.pipeline import Finding
from bus.security.operators import ALL_TENANTS, Operator, Permission
from bus.store.queries import StoreQueryError
from bus.store.trail import ResidentTrail, check_lookup, resident_trail
from bus.store.trail_report import pseudonym_key, timeline, trail_csv
from bus.wareki import JST

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
TRAIL_PATH = "/console/trail"
FIELDS = ("tenant", "since")  # shown again as typed (the 宛名番号 never is)


def trail_tenants(operator: Operator, request: Request) -> list[str]:
    """The towns whose residents' trails the operator may look up: those it may operate on."""
    every = sorted(tenant.code for tenant in config_index(request).config.tenants)
    return [code for code in every if operator.may(Permission.OPERATE, code)]


def _allowed(request: Request) -> tuple[Operator, list[str]]:
    """The operator and its towns; 403 (RK-AUT011) for one that may look up none (viewers)."""
    operator = signed_in(request)
    tenants = trail_tenants(operator, request)
    if not tenants:
        named = sorted(operator.tenants)[0] if operator.tenants else ALL_TENANTS
        raise ConsoleRefusal(403, forbidden(operator, named))
    return operator, tenants


@router.get(TRAIL_PATH)
def trail_form(request: Request) -> Response:
    """The form only: nothing is looked up or recorded, and a query string is never read (a
    link with one is answered with the bare address: a 宛名番号 in it leaves the address bar
    and the browser's history)."""
    _, tenants = _allowed(request)
    if request.url.query:
        return RedirectResponse(TRAIL_PATH, status_code=303)
    query = {"tenant": tenants[0] if len(tenants) == 1 else "", "since": ""}
    return render(request, "trail.html", tenants=tenants, query=query, finding=None, found=None)


def typed_resident(text: str) -> str:
    """The 宛名番号 as typed, full-width digits (１２３) read as digits and spaces around it
    dropped: staff type it from a letter or another system's screen."""
    return unicodedata.normalize("NFKC", text).strip()


@router.post(TRAIL_PATH)
async def trail_posted(request: Request) -> Response:
    """A lookup: the page (``output=page``) or the CSV (``output=csv``), each recorded."""
    form = await posted_form(request)
    return await run_in_threadpool(_lookup, request, form)


def _lookup(request: Request, form: Form) -> Response:
    operator, tenants = _allowed(request)
    query = {name: form.one(name).strip() for name in FIELDS}
    sealed = form.one(SEALED_SUBJECT)
    resident = open_subject(request, sealed) if sealed else typed_resident(form.one("resident"))
    with_wareki = form.one("wareki") == "1"
    page: dict[str, Any] = {"tenants": tenants, "query": query, "with_wareki": with_wareki}
    finding = _refused(query["tenant"], resident, query["since"])
    if finding is not None:  # the form again, with what to correct (the 宛名番号 blank)
        return render(request, "trail.html", status=400, finding=finding, found=None, **page)
    tenant = query["tenant"]
    require_operate(operator, tenant)  # 404 for another town, 403 for a viewer of it
    day = parse_day(query["since"])
    hub = hub_of(request)
    with hub.store.sessions.begin() as session:
        try:
            found = resident_trail(
                session,
                tenant=tenant,
                resident=resident,
                actor=actor(operator),
                pseudonym_key=pseudonym_key(hub.settings),
                since=day_start(day).astimezone(JST) if day else None,  # as the CLI's
                operator=operator,
            )
        except StoreQueryError as refused:  # RK-AUT011: the town's rights changed meanwhile
            raise ConsoleRefusal(403, refused.finding) from None
    if form.one("output") == "csv":
        return _csv(found, with_wareki)
    return render(
        request,
        "trail.html",
        finding=None,
        found=found,
        events=timeline(found),
        sealed=sealed or seal_subject(request, resident),
        **page,
    )


def _refused(tenant: str, resident: str, since: str) -> Finding | None:
    """RK-TEN001 (the town), RK-STO010 (the 宛名番号, masked), RK-CON004 (the day), each
    naming its field for the form to mark."""
    try:
        check_lookup(tenant, resident)
    except StoreQueryError as error:
        field = "resident" if error.finding.code == "RK-STO010" else "tenant"
        return replace(error.finding, path=f"/{field}")
    try:
        parse_day(since)
    except DateRefused as refused:
        return replace(refused.finding, path="/since")
    return None


def _csv(found: ResidentTrail, with_wareki: bool) -> Response:
    """The CLI's CSV, byte for byte; its name has the town and the time, not the 宛名番号."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    filename = f"trail-{found.tenant}-{stamp}.csv"
    headers: dict[str, Any] = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(
        trail_csv(found, with_wareki), media_type="text/csv; charset=utf-8", headers=headers
    )
