"""The one ASGI application the hub serves.

Adapters contribute their routes through the ``renkei.routers`` entry-point group (and
pure ASGI middleware, such as the SOAP fast lane, through ``renkei.middleware``), so the
core composes the app without importing ``adapters`` (DESIGN §2: the core never imports
adapters; a new transport is a new module, not an edit of the core). The lifespan opens the
:class:`~bus.hub.Hub` (``app.state.hub``) and runs the in-process dispatch workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import entry_points

from fastapi import APIRouter, FastAPI

from bus import __version__
from bus.collector import tune_collector
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.malloc_arenas import cap_malloc_arenas
from bus.observability.logs import configure_logging, get_logger
from bus.observability.routes import operations_router
from bus.settings import Settings

ROUTER_GROUP = "renkei.routers"
MIDDLEWARE_GROUP = "renkei.middleware"
log = get_logger(__name__)


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


def create_app() -> FastAPI:
    app = FastAPI(
        title="renkei",
        version=__version__,
        summary="Data-integration hub for municipalities sharing core systems (連携基盤)",
        openapi_url="/openapi.json",
        lifespan=_lifespan,
    )
    settings = Settings()
    configure_logging(access_log=settings.access_log)  # in every HTTP process
    arenas = settings.malloc_arenas
    if arenas:  # before the lifespan starts any thread
        cap_malloc_arenas(arenas)
    app.include_router(_health_router())
    app.include_router(operations_router())
    for entry in sorted(entry_points(group=ROUTER_GROUP), key=lambda e: e.name):
        router = entry.load()
        if not isinstance(router, APIRouter):
            raise TypeError(f"entry point {entry.name!r} is not an APIRouter")
        app.include_router(router)
    for entry in sorted(entry_points(group=MIDDLEWARE_GROUP), key=lambda e: e.name):
        app.add_middleware(entry.load())
    return app
