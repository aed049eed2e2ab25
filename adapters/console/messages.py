"""Dashboard, message search and message detail (with the audited unmasked view)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidTag
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from adapters.console.access import (
    actor,
    config_index,
    require_operate,
    require_view,
    tenant_scope,
    visible_tenants,
)
from adapters.console.dashboard import dashboard
from adapters.console.dates import DateRefused, day_start, parse_day
from adapters.console.detail import console_message, message_tenants, unmask
from adapters.console.rendering import ConsoleRoute, render
from adapters.console.search import CURSOR, PAGE_SIZE, Cursor, search_messages
from adapters.console.session import (
    ConsoleRefusal,
    console_state,
    hub_of,
    posted_form,
    signed_in,
    stated_reason,
)
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.security.secret_box import SecretBox
from bus.store.queries import MessageStatus
from bus.store.trail import record_subject_search
from bus.store.trail_report import pseudonym_key

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/console")
def console_root() -> Response:
    """The address typed without its slash (the app redirects no other path)."""
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/")
def dashboard_page(request: Request) -> Response:
    operator = signed_in(request)
    with hub_of(request).store.sessions() as session:
        figures = dashboard(session, tenant_scope(operator))
    return render(request, "dashboard.html", figures=figures)


SEARCH_FIELDS = ("message_id", "service", "tenant", "subject", "status", "date_from", "date_to")
LINK_FIELDS = tuple(name for name in SEARCH_FIELDS if name != "subject")
SEALED_SUBJECT = "s"  # the query parameter holding the subject, sealed for this session


def _subject_context(request: Request) -> str:
    """A sealed subject opens only in the session that searched for it."""
    return f"renkei.console.subject:{console_state(request).session_id}"


def seal_subject(request: Request, subject: str) -> str:
    """The subject encrypted (AES-GCM, the hub's key) for a URL: what reaches browser history
    and access logs is not the 宛名番号, and it opens in this session only."""
    box = SecretBox.from_settings(hub_of(request).settings)
    sealed = box.seal(subject, _subject_context(request))
    return base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")


def open_subject(request: Request, token: str) -> str:
    """The subject of a search link; RK-CON001 when it is not this session's (logged out
    since, another operator's link, altered)."""
    box = SecretBox.from_settings(hub_of(request).settings)
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return box.open(sealed, _subject_context(request))
    except (ValueError, InvalidTag):  # binascii.Error and SecretKeyError are ValueErrors
        raise ConsoleRefusal(400, make_finding("RK-CON001", path=f"/{SEALED_SUBJECT}")) from None


@router.get("/console/messages")
def search_page(
    request: Request,
    message_id: str = "",
    service: str = "",
    tenant: str = "",
    status: str = "",
    date_from: str = "",
    date_to: str = "",
    s: str = "",
    after: str = "",
) -> Response:
    """Links carry every filter, the subject only sealed (a 宛名番号 in a URL would reach
    access logs), and a page's cursor (``after``: the last row of the page before)."""
    signed_in(request)
    query = {
        "message_id": message_id,
        "service": service,
        "tenant": tenant,
        "subject": open_subject(request, s) if s else "",
        "status": status,
        "date_from": date_from,
        "date_to": date_to,
    }
    return _search(request, query, sealed=s, after=Cursor.parse(after) if after else None)


def search_url(request: Request, query: dict[str, str], sealed: str = "") -> str:
    """The results' URL; ``sealed``: the subject as a link already carries it (kept as it is,
    not sealed again)."""
    params = [(name, query[name]) for name in LINK_FIELDS if query[name].strip()]
    if query["subject"].strip():
        params.append((SEALED_SUBJECT, sealed or seal_subject(request, query["subject"].strip())))
    return f"/console/messages?{urlencode(params)}" if params else "/console/messages"


def _refused(query: dict[str, str]) -> Finding | None:
    """What makes the form unsearchable: an unreadable day (RK-CON004), a start after the
    end (RK-CON006), a status that is none of the statuses (RK-CON007)."""
    days: dict[str, date | None] = {}
    for name in ("date_from", "date_to"):  # the finding names the field (the form marks it)
        try:
            days[name] = parse_day(query[name])
        except DateRefused as refused:
            return replace(refused.finding, path=f"/{name}")
    first, last = days["date_from"], days["date_to"]
    if first and last and first > last:
        typed = query["date_from"].strip()[:40], query["date_to"].strip()[:40]
        return make_finding("RK-CON006", path="/date_from", actual=typed[0], expected=typed[1])
    if query["status"] and query["status"] not in set(MessageStatus):
        choices = ", ".join(MessageStatus)
        return make_finding(
            "RK-CON007", path="/status", actual=query["status"][:40], expected=choices
        )
    return None


@router.post("/console/messages")
async def search_posted(request: Request) -> Response:
    """The search form is POSTed (the subject it may hold stays out of URLs) and answered
    with a redirect to the results (Post/Redirect/Get), so that the browser's back button
    returns to them; a form that cannot be searched is shown again with the finding."""
    form = await posted_form(request)
    query = {name: form.one(name) for name in SEARCH_FIELDS}
    await run_in_threadpool(signed_in, request)
    if _refused(query) is not None:
        return await run_in_threadpool(_search, request, query)
    return RedirectResponse(search_url(request, query), status_code=303)


def _search(
    request: Request, query: dict[str, str], sealed: str = "", after: Cursor | None = None
) -> Response:
    operator = signed_in(request)
    index = config_index(request)
    tenant = query["tenant"]
    if tenant:
        require_view(operator, tenant)
    page: dict[str, Any] = {
        "query": query,
        "services": sorted({route.service for route in index.config.routes}),
        "tenants": visible_tenants(operator, index),
        "statuses": [s.value for s in MessageStatus],
        "limit": PAGE_SIZE,
    }
    finding = _refused(query)
    if finding is not None:  # the form again, as typed, with what to correct
        return render(request, "messages.html", status=400, found=[], finding=finding, **page)
    first, last = parse_day(query["date_from"]), parse_day(query["date_to"])
    subject = query["subject"].strip() or None
    hub = hub_of(request)
    # a write (the record below) only when searching by 宛名番号: on SQLite a writing
    # transaction takes the store's one write lock
    opened = hub.store.sessions.begin() if subject else hub.store.sessions()
    with opened as session:
        result = search_messages(
            session,
            tenants=tenant_scope(operator),
            tenant=tenant or None,
            message_id=query["message_id"].strip() or None,
            service=query["service"] or None,
            subject=subject,
            status=MessageStatus(query["status"]) if query["status"] else None,
            since=day_start(first) if first else None,
            until=day_start(last + timedelta(days=1)) if last else None,
            after=after,
        )
        if subject is not None:  # a look-up of one resident: on the admin chain, as a trail's
            searched = [tenant] if tenant else page["tenants"]
            key = pseudonym_key(hub.settings)
            found = len(result.found)
            record_subject_search(session, actor(operator), subject, searched, found, key)
    here = search_url(request, query, sealed)
    joiner = "&" if "?" in here else "?"
    return render(
        request,
        "messages.html",
        found=result.found,
        finding=None,
        first_page=here if after else None,
        next_page=f"{here}{joiner}{CURSOR}={result.next.token()}" if result.next else None,
        **page,
    )


def _detail_page(request: Request, tenant: str, message_id: str, clear: str | None) -> Response:
    operator = signed_in(request)
    require_view(operator, tenant)
    index = config_index(request)  # before the session: SQLite allows one open at a time
    with hub_of(request).store.sessions() as session:
        if tenant not in message_tenants(session, message_id):
            raise ConsoleRefusal(404)  # the same answer as for another tenant's message
        shown = console_message(session, message_id, tenant, index)
    return render(request, "message.html", shown=shown, clear=clear, tenant=tenant)


@router.get("/console/messages/{tenant}/{message_id}")
def message_page(request: Request, tenant: str, message_id: str) -> Response:
    return _detail_page(request, tenant, message_id, None)


@router.post("/console/messages/{tenant}/{message_id}/unmask")
async def unmask_message(request: Request, tenant: str, message_id: str) -> Response:
    """Operators and admins of the tenant may read a body unmasked, with a stated reason that
    goes to the 閲覧ログ; viewers may not."""
    form = await posted_form(request)
    operator = await run_in_threadpool(signed_in, request)
    require_operate(operator, tenant)
    reason = stated_reason(form)
    sessions = hub_of(request).store.sessions

    def audited() -> str:
        with sessions.begin() as session:
            if tenant not in message_tenants(session, message_id):
                raise ConsoleRefusal(404)
            return unmask(session, message_id, tenant, actor=actor(operator), reason=reason)

    clear = await run_in_threadpool(audited)
    return await run_in_threadpool(_detail_page, request, tenant, message_id, clear)
