"""``/metrics``, ``/readyz`` (and the existing ``/healthz``'s neighbours): no login, so a
monitoring system and a load balancer can read them."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from bus.hub import Hub
from bus.observability.cert_expiry import CertificateExpiryCollector
from bus.observability.disk_space import DiskSpaceCollector
from bus.observability.metrics import exposition
from bus.observability.readiness import ReadinessCollector, readiness
from bus.observability.store_gauges import StoreCollector


def _hub(request: Request) -> Hub | None:
    hub: Hub | None = getattr(request.app.state, "hub", None)
    return hub


def operations_router() -> APIRouter:
    router = APIRouter(tags=["operations"])
    certificates = CertificateExpiryCollector.from_environment()  # read once: as uvicorn did

    @router.get(
        "/metrics",
        summary="Prometheus metrics (監視項目)",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def metrics(request: Request) -> Response:
        hub = _hub(request)
        extra: list[Collector] = [ReadinessCollector(hub)]
        if hub is not None:
            extra.append(StoreCollector(hub.store.sessions, lambda: hub.config.current().version))
            extra.append(DiskSpaceCollector(hub.settings.data_dir))
        if certificates is not None:
            extra.append(certificates)
        return Response(exposition(extra), media_type=CONTENT_TYPE_LATEST)

    @router.get(
        "/readyz",
        summary="Readiness (受付可否)",
        responses={
            503: {
                "description": "Not ready: a coded finding per failed check",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    def readyz(request: Request) -> JSONResponse:
        checks = readiness(_hub(request))
        ready = all(check.ok for check in checks)
        body = {
            "status": "ready" if ready else "unavailable",
            "checks": {check.name: check.as_dict() for check in checks},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    return router
