"""The one ASGI application the hub serves.

Adapters contribute their routes through the ``renkei.routers`` entry-point group (and
pure ASGI middleware, such as the SOAP fast lane, through ``renkei.middleware``), so the
core composes the app without importing ``adapters`` (DESIGN §2: the core never imports
adapters; a new transport is a new module, not an edit of the core). The lifespan opens the
:class:`~bus.hub.Hub` (``app.state.hub``) and runs the in-process dispatch workers.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, FastAPI
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from bus import __version__
from bus.collector import tune_collector
from bus.dispatch.processes import serve_parent
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.malloc_arenas import cap_malloc_arenas
from bus.observability.logs import configure_logging, get_logger
from bus.observability.routes import operations_router
from bus.protection.file_modes import keep_files_private
from bus.settings import Settings, settings_refusals

ROUTER_GROUP = "renkei.routers"
MIDDLEWARE_GROUP = "renkei.middleware"
#: A worker that cannot start: uvicorn's and gunicorn's supervisors stop (rather than restart
#: it again and again) on this exit status
WORKER_BOOT_ERROR = 3
PR_SET_PDEATHSIG = 1  # prctl(2)
API_DOC_FILES = "/docs/files"  # Swagger UI's and ReDoc's scripts, styles and icon
log = get_logger(__name__)


@runtime_checkable
class AnswersHttpErrors(Protocol):
    """A contributed router that answers the framework's own refusals (no route: 404, a
    method no route takes: 405, unreadable parameters: 422) under its paths in its protocol's
    form (a SOAP Fault, problem+json); ``None`` leaves the request to the next router, and
    at last to FastAPI's plain JSON."""

    def answer_http_error(
        self, request: Request, status: int, headers: Mapping[str, str] | None, detail: str
    ) -> Response | None: ...


def route_path(scope: Scope) -> str:
    """The request's path below the application's mount point, as the routes match it:
    ``scope["path"]`` without the ``root_path`` prefix (ASGI: ``path`` includes it), or the
    path itself when it is not under ``root_path`` (a server that already strips it)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path") or ""
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    return rest if not rest or rest.startswith("/") else path


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route takes at this request's path (``Allow`` of a 405): Starlette
    names only the first route whose path matches, and two routes may share a path (``POST
    /api/v1/messages/{service}``, ``GET /api/v1/messages/{message_id}``)."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _install_error_answers(
    app: FastAPI, routers: list[AnswersHttpErrors], routes: list[BaseRoute]
) -> None:
    def answer(
        request: Request, status: int, headers: Mapping[str, str] | None, detail: str
    ) -> Response | None:
        answers = (r.answer_http_error(request, status, headers, detail) for r in routers)
        return next((response for response in answers if response is not None), None)

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 405:
            allowed = allowed_methods(routes, request.scope)
            if allowed:
                error.headers = {**(error.headers or {}), "Allow": ", ".join(allowed)}
        response = answer(request, error.status_code, error.headers, str(error.detail))
        return response or await http_exception_handler(request, error)

    async def on_invalid_request(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        response = answer(request, 422, None, _first_error(error))
        return response or await request_validation_exception_handler(request, error)

    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)


def _first_error(error: RequestValidationError) -> str:
    """``where: what`` of the first parameter error, e.g. ``query.limit: …``."""
    first: Mapping[str, Any] = next(iter(error.errors()), {})
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}"


def _health_router() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["operations"], summary="Liveness (稼働確認)")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return router


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings()
    hub = Hub.open(settings)
    pool = hub.workers(settings.dispatch_workers) if settings.dispatch_workers else None
    if pool is not None:
        pool.start()
    # the hot folders of the configuration in force (a pass with none configured is a no-op)
    watcher = FolderWatcher(hub) if settings.folder_watcher else None
    if watcher is not None:
        watcher.start()
    app.state.hub = hub
    tune_collector(settings.gc_young_threshold)  # startup is done: the hub is open
    log.info(
        "hub.ready",
        store="SQLite" if settings.is_sqlite else "PostgreSQL",
        dispatch_workers=settings.dispatch_workers,
    )
    try:
        yield
    finally:
        if watcher is not None:
            watcher.stop()
        if pool is not None:
            pool.stop()
        hub.close()


def _settings_or_exit() -> Settings:
    """The settings, or (a ``RENKEI_*`` value that cannot be used) the coded lines
    ``renkei serve`` prints (RK-OPS010) and exit :data:`WORKER_BOOT_ERROR`. Started by
    ``renkei serve`` the values were checked already; started by ``uvicorn`` or ``gunicorn``
    directly, pydantic's traceback was all an operator saw, and with several workers
    uvicorn restarted each failing worker without end."""
    try:
        return Settings()
    except ValidationError as error:
        for finding in settings_refusals(error):
            print(f"{finding.code} {finding.message_ja} / {finding.message_en}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(WORKER_BOOT_ERROR) from None


def stop_with_serve() -> None:
    """In an HTTP process of ``renkei serve --http-workers N``: be sent SIGTERM (a graceful
    stop) when serve dies. uvicorn's processes did not notice: after a serve killed with
    SIGKILL (the OOM killer, systemd's KillMode=process) they kept answering on its port, and
    the serve started again refused the busy port (RK-OPS012). Linux only."""
    parent = serve_parent()  # serve sets it for every process it starts
    if parent is None or parent == os.getpid() or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # gone before the request above was in force
        os.kill(os.getpid(), signal.SIGTERM)


def create_app() -> FastAPI:
    # /docs and /redoc load Swagger UI and ReDoc from the hub itself (under API_DOC_FILES),
    # not from a CDN: on a closed network such as LGWAN the CDN's pages stay blank
    app = FastAPIOffline(
        title="renkei",
        version=__version__,
        summary="Data-integration hub for municipalities sharing core systems (連携基盤)",
        openapi_url="/openapi.json",
        static_url=API_DOC_FILES,
        lifespan=_lifespan,
        # a path with a slash too many is not found (RK-API006 under /api/v1), not redirected:
        # Starlette's 307 to an absolute http:// URL built from the Host header had a client
        # behind a TLS proxy send the body again to that address
        redirect_slashes=False,
    )
    settings = _settings_or_exit()
    stop_with_serve()
    keep_files_private()  # uvicorn started on its own, not by `renkei serve`
    configure_logging(access_log=settings.access_log)  # in every HTTP process
    arenas = settings.malloc_arenas
    if arenas:  # before the lifespan starts any thread
        cap_malloc_arenas(arenas)
    routers = [_health_router(), operations_router()]
    answering: list[AnswersHttpErrors] = []
    for entry in sorted(entry_points(group=ROUTER_GROUP), key=lambda e: e.name):
        router = entry.load()
        if not isinstance(router, APIRouter):
            raise TypeError(f"entry point {entry.name!r} is not an APIRouter")
        routers.append(router)
        if isinstance(router, AnswersHttpErrors):
            answering.append(router)
    for router in routers:
        app.include_router(router)
    _install_error_answers(app, answering, [r for router in routers for r in router.routes])
    for entry in sorted(entry_points(group=MIDDLEWARE_GROUP), key=lambda e: e.name):
        app.add_middleware(entry.load())
    return app
