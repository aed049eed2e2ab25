"""The console's one router (entry point ``renkei.routers``: ``console``)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from adapters.console import auth, dead_letters, messages, operations, trail
from adapters.console.rendering import framework_refusal_page
from bus.webapp import route_path

CONSOLE_PREFIX = "/console"


class ConsoleRouter(APIRouter):
    """Answers the framework's refusals under ``/console`` as console pages, with the
    console's security headers (bus/webapp.py asks every contributed router)."""

    def answer_http_error(
        self, request: Request, status: int, headers: Mapping[str, str] | None, detail: str
    ) -> Response | None:
        path = route_path(request.scope)
        if path != CONSOLE_PREFIX and not path.startswith(f"{CONSOLE_PREFIX}/"):
            return None
        response = framework_refusal_page(request, status)
        if headers:
            response.headers.update(headers)  # 405's Allow
        return response


router = ConsoleRouter(include_in_schema=False)
router.include_router(auth.router)
router.include_router(messages.router)
router.include_router(dead_letters.router)
router.include_router(operations.router)
router.include_router(trail.router)
