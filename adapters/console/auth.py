"""Login, logout, the language switch and the console's static files."""

from __future__ import annotations

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
    console_state,
    hub_of,
    posted_form,
    signed_in,
)
from bus.security.operators import OperatorError, authenticate

HOME = "/console/"
STATIC = Path(__file__).with_name("static")
_STATIC_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.(css|js|svg)$")
_MEDIA = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml"}

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


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
        return render(request, "login.html", next=safe_next(next), finding=None)


@router.post(LOGIN_PATH)
async def login(request: Request) -> Response:
    form = await posted_form(request)
    target = safe_next(form.one("next"))
    sessions = hub_of(request).store.sessions
    try:
        operator = await run_in_threadpool(
            authenticate, sessions, form.one("username"), form.one("password")
        )
    except OperatorError as refused:
        return render(request, "login.html", status=401, next=target, finding=refused.finding)
    console_state(request).sign_in(operator.username)
    return RedirectResponse(target, status_code=303)


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    await posted_form(request)
    console_state(request).sign_out()
    return RedirectResponse(LOGIN_PATH, status_code=303)


@router.get("/console/lang")
def switch_language(to: str = "ja", next: str = HOME) -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    language = "en" if to == "en" else "ja"
    response.set_cookie(
        LANG_COOKIE, language, max_age=365 * 86400, httponly=True, samesite="strict"
    )
    return response


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if not _STATIC_NAME.fullmatch(name) or not path.is_file():
        raise ConsoleRefusal(404)
    return FileResponse(path, media_type=_MEDIA[name.rsplit(".", 1)[1]])
