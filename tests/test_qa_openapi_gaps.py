"""What ``/openapi.json`` declared short of what the hub does: the feeds' authentication, the
validator's lack of it, a sender that hangs up mid-body, and the status GET while the store
cannot be reached (the app in-process, on a real SQLite store)."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.rest.problem import PROBLEM_JSON
from bus.hub import Hub
from bus.webapp import create_app
from tests.support.hub_server import sample, serialize
from tests.test_qa_rest_client import _code, _send, _spec

FEEDS = "/api/v1/feeds"
WRONG_KEY = {"Authorization": "Bearer rk_juki_nokey.wrong"}


def test_the_feeds_declare_the_one_api_key_scheme_and_refuse_a_wrong_key(
    local_hub: Hub,
) -> None:
    spec = _spec()
    assert list(spec["components"]["securitySchemes"]) == ["apiKey"]  # one scheme, reused
    for path in (f"{FEEDS}/{{service}}", f"{FEEDS}/{{service}}/export"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [{"apiKey": []}, {}], path  # the key, or the address
        assert {"401", "403"} <= set(operation["responses"]), path
    answer = _send(
        local_hub, "GET", f"{FEEDS}/ResidentChangeNotice?tenant=414247", headers=WRONG_KEY
    )
    assert answer.status_code == 401 and _code(answer) == "RK-AUT001"


def test_the_validator_is_declared_open_and_reads_its_content_type_from_the_request(
    local_hub: Hub,
) -> None:
    operation = _spec()["paths"]["/api/v1/validate"]["post"]
    assert operation["security"] == []
    assert "parameters" not in operation  # no `content-type` header parameter
    headers = {"Content-Type": "application/xml; charset=utf-8", **WRONG_KEY}
    body = serialize(sample("ResidentChangeNotice"))
    answer = _send(local_hub, "POST", "/api/v1/validate", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["valid"] is True  # no key checked
    plain = _send(local_hub, "POST", "/api/v1/validate", content=body)
    assert plain.status_code == 415 and _code(plain) == "RK-API001"


def _hang_up_mid_body(hub: Hub, path: str) -> tuple[int, bytes]:
    """A sender that declares a body, sends its first part and disconnects (raw ASGI: the
    server hands the app ``http.disconnect``)."""
    app = create_app()
    app.state.hub = hub
    body = serialize(sample("ResidentChangeNotice"))
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"hub"),
            (b"content-type", b"application/xml"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("hub", 80),
    }

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), content


def test_a_sender_that_hangs_up_mid_body_is_a_client_error(local_hub: Hub) -> None:
    for path in ("/api/v1/messages/ResidentChangeNotice", "/api/v1/validate"):
        status, content = _hang_up_mid_body(local_hub, path)
        assert status == 400, (path, content)
        assert b"RK-API014" in content, path


def test_the_status_get_while_the_store_cannot_be_reached_is_503_retry_later(
    local_hub: Hub,
) -> None:
    sent = _send(
        local_hub,
        "POST",
        "/api/v1/messages/ResidentChangeNotice",
        content=serialize(sample("ResidentChangeNotice")),
        headers={"Content-Type": "application/xml"},
    )
    assert sent.status_code == 202, sent.text
    data_dir = local_hub.settings.data_dir
    moved = data_dir.with_name("data-away")
    local_hub.store.engine.dispose()  # new connections must open the (now missing) file
    data_dir.rename(moved)
    try:
        answer = _send(local_hub, "GET", sent.json()["status_url"])
    finally:
        moved.rename(data_dir)
    assert answer.status_code == 503, answer.text
    assert _code(answer) == "RK-STO008"
    assert answer.headers["retry-after"].isdigit()
    declared = _spec()["paths"]["/api/v1/messages/{message_id}"]["get"]["responses"]
    assert "Retry-After" in declared["503"]["headers"]
    assert declared["503"]["content"][PROBLEM_JSON]
