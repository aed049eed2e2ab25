"""Login, logout, the language switch and the console's static files. Every login (granted,
failed or throttled) and logout is recorded on the admin chain (bus/security/login_audit.py):
who, when, from which address, the outcome — never the password."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from adapters.console.rendering import LOGIN_PATH, ConsoleRoute, render
from adapters.console.session import (
    LANG_COOKIE,
    ConsoleRefusal,
    LoginRequired,
    client_address,
    console_state,
    enabled_tenants,
    end_session,
    hub_of,
    opening,
    posted_form,
    secure_cookies,
    signed_in,
)
from bus.config.models import RateLimit
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.security import login_audit
from bus.security.operators import OperatorError, authenticate, no_user_hash
from bus.security.rate_limit import RateLimiter

HOME = "/console/"
STATIC = Path(__file__).with_name("static")
_STATIC_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.(css|js|svg)$")
_MEDIA = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml"}
#: Login attempts per account and minute (counted in the database, for every hub process).
LOGIN_LIMIT = RateLimit(per_minute=10)
#: Failed logins per client address and minute, whatever the accounts: one password tried
#: against many accounts (password spraying) meets no account's limit.
FAILED_LOGINS_PER_ADDRESS = RateLimit(per_minute=20)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
no_user_hash()  # made now: a login for no account then takes as long as any other


def login_throttled(request: Request, username: str) -> int | None:
    """Count one login attempt for ``username`` (whatever its outcome, before the password
    is checked); the seconds to wait when the account had too many this minute."""
    account = hashlib.sha256(username.strip().lower().encode("utf-8")).hexdigest()[:32]
    limiter = RateLimiter(hub_of(request).store.sessions)
    return limiter.admit(f"login:{account}", LOGIN_LIMIT)  # ':' is in no system id


def _address_key(request: Request) -> str:
    address = client_address(request)
    return "from:" + hashlib.sha256(address.encode("utf-8")).hexdigest()[:32]


def address_throttled(request: Request) -> int | None:
    """The seconds to wait when this client address failed too many logins this minute."""
    limiter = RateLimiter(hub_of(request).store.sessions)
    return limiter.waiting(_address_key(request), FAILED_LOGINS_PER_ADDRESS)


def count_failed_login(request: Request) -> None:
    RateLimiter(hub_of(request).store.sessions).admit(
        _address_key(request), FAILED_LOGINS_PER_ADDRESS
    )


def safe_next(target: str) -> str:
    """Only a console path: never an open redirect to another site."""
    return target if target.startswith("/console/") and "//" not in target else HOME


@router.get("/")
def root() -> Response:
    return RedirectResponse(HOME, status_code=303)


@router.get(LOGIN_PATH)
def login_page(request: Request, next: str = HOME) -> Response:
    try:
        signed_in(request)
        return RedirectResponse(safe_next(next), status_code=303)
    except LoginRequired:
        state = console_state(request)
        notice = state.notice  # why the last session ended: said once
        if notice is not None:
            state.notice, state.changed = None, True
        return render(request, "login.html", next=safe_next(next), finding=None, notice=notice)


@router.post(LOGIN_PATH)
async def login(request: Request) -> Response:
    form = await posted_form(request)
    target = safe_next(form.one("next"))
    hub = hub_of(request)
    sessions, typed, address = hub.store.sessions, form.one("username"), client_address(request)
    wait = await run_in_threadpool(address_throttled, request)
    if wait is not None:
        limit = FAILED_LOGINS_PER_ADDRESS.per_minute
        finding = make_finding("RK-CON008", path="/", limit=limit)
        return await _throttled(request, target, finding, wait, typed)
    wait = await run_in_threadpool(login_throttled, request, typed)
    if wait is not None:
        limit = LOGIN_LIMIT.per_minute
        finding = make_finding("RK-CON005", path="/", limit=limit)
        return await _throttled(request, target, finding, wait, typed)
    now, password = await run_in_threadpool(opening, sessions, typed)
    try:
        operator = await run_in_threadpool(authenticate, sessions, typed, form.one("password"))
    except OperatorError as refused:
        await run_in_threadpool(count_failed_login, request)
        await run_in_threadpool(
            login_audit.record_failure, sessions, typed, address, reason=login_audit.CREDENTIALS
        )
        return render(request, "login.html", status=401, next=target, finding=refused.finding)
    if password is None:  # the account was made between the two reads: log in again
        return RedirectResponse(LOGIN_PATH, status_code=303)
    if not operator.acting_for(await run_in_threadpool(enabled_tenants, hub)).tenants:
        await run_in_threadpool(
            login_audit.record_failure,
            sessions,
            typed,
            address,
            reason=login_audit.TOWNS_DISABLED,
        )
        finding = make_finding("RK-AUT015", path="/")
        return render(request, "login.html", status=403, next=target, finding=finding)
    state = console_state(request)
    state.sign_in(operator.username, now, password)
    assert state.session_id is not None
    # recorded before the answer: no session is granted without its record
    await run_in_threadpool(
        login_audit.record_login, sessions, operator.username, address, state.session_id
    )
    return RedirectResponse(target, status_code=303)


async def _throttled(
    request: Request, target: str, finding: Finding, wait: int, typed: str
) -> Response:
    sessions, address = hub_of(request).store.sessions, client_address(request)
    await run_in_threadpool(login_audit.record_failure, sessions, typed, address, code=finding.code)
    page = render(request, "login.html", status=429, next=target, finding=finding)
    page.headers["Retry-After"] = str(wait)
    return page


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    await posted_form(request)
    state = console_state(request)
    sessions, address = hub_of(request).store.sessions, client_address(request)
    await run_in_threadpool(end_session, sessions, state, address)
    state.sign_out()
    return RedirectResponse(LOGIN_PATH, status_code=303)


@router.get("/console/lang")
def switch_language(request: Request, to: str = "ja", next: str = HOME) -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    language = "en" if to == "en" else "ja"
    response.set_cookie(
        LANG_COOKIE,
        language,
        max_age=365 * 86400,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    return response


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if not _STATIC_NAME.fullmatch(name) or not path.is_file():
        raise ConsoleRefusal(404)
    return FileResponse(path, media_type=_MEDIA[name.rsplit(".", 1)[1]])
