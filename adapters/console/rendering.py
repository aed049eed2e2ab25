"""Jinja2 pages and the route class every console page goes through: it reads the session
cookie, writes it back when it changed, adds the security headers (no framing, no caching,
nothing loaded from outside the hub) and turns refusals into pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from adapters.console.dates import DateRefused, display
from adapters.console.i18n import (
    error_explainer,
    parenthesised,
    state_labeller,
    translator,
    waiting_labeller,
    why_labeller,
)
from adapters.console.inputs import refused_field
from adapters.console.session import (
    COOKIE,
    MAX_AGE_SECONDS,
    ConsoleRefusal,
    LoginRequired,
    console_state,
    cookie_value,
    language,
    read_session,
    secure_cookies,
)
from bus import __version__

TEMPLATES = Path(__file__).with_name("templates")
LOGIN_PATH = "/console/login"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HSTS = "max-age=31536000"  # one year; sent only over HTTPS (RFC 6797 §7.2)


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["plain_json"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.filters["thousands"] = lambda number: f"{number:,}"  # 1,205
    return env


def words(lang: str) -> dict[str, Any]:
    """What the templates say things with, in ``lang``: labels, states, reasons, dates."""
    return {
        "t": translator(lang),
        "state": state_labeller(lang),
        "waiting": waiting_labeller(lang),
        "why": why_labeller(lang),
        "paren": parenthesised(lang),
        "explain": error_explainer(lang),
        "lang": lang,
        "when": lambda moment: display(moment, lang),
    }


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = language(request)
    state = console_state(request)
    page = environment().get_template(template)
    html = page.render(
        **words(lang),
        operator=state.operator,
        csrf=state.csrf,
        path=request.url.path,
        here=quote(str(request.url.path) + ("?" + request.url.query if request.url.query else "")),
        version=__version__,
        **context,
    )
    return HTMLResponse(html, status_code=status)


HOME = "/console/"


def came_from(request: Request) -> str:
    """The console page the request came from (its ``Referer``), as a path on this site, for
    an error page's 戻る; the dashboard when there is none or it is not one of ours (another
    site, another part of the hub, a scheme-relative ``//host`` path): never a link off
    the console."""
    referer = urlsplit(request.headers.get("referer", ""))
    # the host only (behind a TLS proxy the hub sees http): the link is a path in any case
    if referer.netloc != request.url.netloc or not referer.path.startswith(HOME):
        return HOME
    return referer.path + (f"?{referer.query}" if referer.query else "")


def _refusal_page(request: Request, refusal: ConsoleRefusal) -> Response:
    return render(
        request,
        "error.html",
        status=refusal.status,
        status_code=refusal.status,
        finding=refusal.finding,
        back=came_from(request),
    )


def locked_down(request: Request, response: Response) -> Response:
    """``response`` with the console's security headers (those it has not set itself)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.url.scheme == "https":  # a browser then never falls back to HTTP
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def framework_refusal_page(request: Request, status: int) -> Response:
    """The error page, locked down, for what the framework refuses under ``/console/`` before
    any console route runs (no such path: 404, a method no route takes: 405): not FastAPI's
    plain JSON without the console's headers. The session is read but not renewed."""
    request.state.console = read_session(request)
    return locked_down(request, _refusal_page(request, ConsoleRefusal(status)))


def refuse_unusable_input(request: Request) -> None:
    """RK-CON010 for a query parameter or path segment with a control or text-direction
    character (adapters/console/inputs.py; a form's fields: ``posted_form``)."""
    path_params = [(name, str(value)) for name, value in request.path_params.items()]
    refused = refused_field([*request.query_params.multi_items(), *path_params])
    if refused is not None:
        raise ConsoleRefusal(400, refused)


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            state = read_session(request)
            request.state.console = state
            try:
                refuse_unusable_input(request)
                response = await handler(request)
            except LoginRequired:
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                response = RedirectResponse(f"{LOGIN_PATH}?next={target}", status_code=303)
            except ConsoleRefusal as refusal:
                response = _refusal_page(request, refusal)
            except DateRefused as refused:
                response = _refusal_page(request, ConsoleRefusal(400, refused.finding))
            if state.changed:
                response.set_cookie(
                    COOKIE,
                    cookie_value(request, state),
                    max_age=MAX_AGE_SECONDS,
                    httponly=True,
                    samesite="strict",
                    secure=secure_cookies(request),
                    path="/",
                )
            return locked_down(request, response)

        return console_handler
