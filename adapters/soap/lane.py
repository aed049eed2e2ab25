"""The SOAP fast lane: ``POST /soap/{Service}`` answered before the framework's routing.

A connected system's notification is the hub's hottest request. Through FastAPI it crosses
the exception and exit-stack middleware and the match against every route of every
included router before :func:`~adapters.soap.router.soap_endpoint` runs; none of that does
anything for a SOAP POST (the endpoint reads the raw body, answers every error itself as a
Fault and has no dependencies). This pure ASGI middleware, installed through the
``renkei.middleware`` entry-point group, hands such a request to the very same endpoint
function, so the answer is the one the route would give (the tests compare both). Anything
else — ``GET ?wsdl``, REST, the console — goes on to the application as before. It sits
inside the application's outermost middleware, so an unexpected exception still becomes the
server's plain 500 without a traceback.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.soap.router import PREFIX, soap_endpoint
from bus.webapp import route_path


class SoapLane:
    """Pure ASGI middleware: SOAP POSTs straight to :func:`soap_endpoint`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = _soap_post_service(scope)
        if service is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"service": service}
        response = await soap_endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _soap_post_service(scope: Scope) -> str | None:
    """The ``{service}`` of a ``POST /soap/{service}`` (one non-empty path segment, as the
    route's ``{service}`` matches it), else ``None``."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = route_path(scope)  # below the mount point, as the router matches it
    if not path.startswith(PREFIX):
        return None
    service = path[len(PREFIX) :]
    return service if service and "/" not in service else None
