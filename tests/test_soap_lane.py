"""The SOAP fast lane: a SOAP POST is answered without the framework's routing, and with the
very answer the ``/soap/{service}`` route gives for the same request."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse

from adapters.soap.lane import SoapLane
from bus.hub import Hub
from bus.webapp import create_app
from tests.support.hub_server import sample, serialize, soap_envelope

SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(rb"(<[^>]*(?:timestamp|storedAt)>)[^<]*<")


@pytest.fixture
def hub(local_hub: Hub) -> Hub:
    return local_hub


def _post(app: object, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(send())


def _with_lane(hub: Hub) -> object:
    app = create_app()
    app.state.hub = hub
    assert any(m.cls is SoapLane for m in app.user_middleware), "installed by its entry point"
    return app


def _route_only(hub: Hub) -> object:
    app = create_app()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not SoapLane]
    app.state.hub = hub
    return app


def _cases() -> list[tuple[str, bytes, dict[str, str]]]:
    wrong_service = soap_envelope(sample("LevyNotice"))
    return [
        ("/soap/ResidentChangeNotice", soap_envelope(sample("ResidentChangeNotice")), SOAP),
        ("/soap/AddresseeInquiry", b"<a>not soap</a>", SOAP),
        ("/soap/ResidentChangeNotice", wrong_service, SOAP),
        ("/soap/ResidentChangeNotice", b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', SOAP),
        ("/soap/NoSuchService", soap_envelope(sample("ResidentChangeNotice")), SOAP),
        ("/soap/ResidentChangeNotice", b"{}", {"Content-Type": "application/json"}),
        ("/soap/ResidentChangeNotice", serialize(sample("ResidentChangeNotice")), SOAP),
    ]


def test_lane_answers_as_the_route_does(hub: Hub) -> None:
    lane, route = _with_lane(hub), _route_only(hub)
    # two sets of the same requests, each with fresh message ids (the same content twice
    # would be an accepted duplicate)
    for (path, body, headers), (_, twin, _) in zip(_cases(), _cases(), strict=True):
        through_route = _post(route, path, body, headers)
        through_lane = _post(lane, path, twin, headers)
        assert through_lane.status_code == through_route.status_code, (path, through_lane.text)
        assert through_lane.headers["content-type"] == through_route.headers["content-type"]
        assert _stable(through_lane.content) == _stable(through_route.content), path


def test_a_soap_post_never_reaches_the_router(hub: Hub) -> None:
    """An application without any route still answers a SOAP POST through the lane; what
    is not a SOAP POST goes on to the application."""

    async def nothing_here(scope: object, receive: object, send: object) -> None:
        await PlainTextResponse("next", status_code=404)(scope, receive, send)  # type: ignore[arg-type]

    app = Starlette()
    app.router.routes.clear()
    app.add_middleware(SoapLane)
    app.router.default = nothing_here  # type: ignore[method-assign]
    app.state.hub = hub
    body = soap_envelope(sample("ResidentChangeNotice"))
    answered = _post(app, "/soap/ResidentChangeNotice", body, SOAP)
    assert answered.status_code == 200 and b"Acknowledgement" in answered.content
    for path in ("/soap/ResidentChangeNotice/extra", "/soap/", "/api/v1/messages/x"):
        assert _post(app, path, body, SOAP).text == "next", path


_ID = re.compile(rb"(<(?:\w+:)?messageId>)([^<]*)(<)")


def _stable(content: bytes) -> bytes:
    """The answer without what differs between two requests (ids, times)."""
    content = _ID.sub(rb"\1-\3", content)
    content = re.sub(
        rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", b"-", content
    )
    return TIMESTAMP.sub(rb"\1-<", content)
