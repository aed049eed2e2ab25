"""A vendor's REST client written from ``/openapi.json`` and docs/adapters.md alone: what the
spec promises (authentication, headers, statuses) is what the hub answers, and every error
under ``/api/v1`` is a coded problem+json (the app in-process, on a real SQLite store)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from adapters.rest.json_form import to_json
from adapters.rest.problem import PROBLEM_JSON
from bus.hub import Hub
from bus.webapp import create_app
from tests.support.hub_server import sample

API = "/api/v1/messages"


def _send(hub: Hub, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request from loopback (the sample configuration's ``juki``), in-process."""
    app = create_app()
    app.state.hub = hub

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def _spec() -> dict[str, Any]:
    return create_app().openapi()


def _code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "findings"}
    assert body["status"] == response.status_code
    return str(body["findings"][0]["code"])


def test_the_spec_declares_how_a_caller_authenticates() -> None:
    """docs/adapters.md: ``Authorization: Bearer <API key>``, or no header and the source
    address; the spec must say so for a client generated from it to send the key."""
    spec = _spec()
    schemes = spec["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if (s["type"], s["scheme"]) == ("http", "bearer")]
    assert bearer
    for path, method in ((f"{API}/{{service}}", "post"), (f"{API}/{{message_id}}", "get")):
        security = spec["paths"][path][method]["security"]
        assert {bearer[0]: []} in security and {} in security  # the key, or the address


def test_the_spec_documents_the_headers_and_statuses_a_sender_acts_on() -> None:
    post = _spec()["paths"][f"{API}/{{service}}"]["post"]["responses"]
    assert "Location" in post["202"]["headers"]
    assert post["429"]["content"][PROBLEM_JSON]
    for status in ("429", "503"):
        assert "Retry-After" in post[status]["headers"], status


def test_a_resend_is_documented_as_the_spec_answers_it(local_hub: Hub) -> None:
    form = to_json(sample("ResidentChangeNotice"))
    first = _send(local_hub, "POST", f"{API}/ResidentChangeNotice", json=form)
    again = _send(local_hub, "POST", f"{API}/ResidentChangeNotice", json=form)
    assert (first.status_code, again.status_code) == (202, 202)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.headers["location"] == first.json()["status_url"]
    accepted = _spec()["components"]["schemas"]["Accepted"]["properties"]
    assert "resend" in accepted["duplicate"]["description"]
    assert "409" in accepted["duplicate"]["description"]


def test_json_nested_too_deep_says_so_not_that_it_is_not_json(local_hub: Hub) -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    headers = {"Content-Type": "application/json"}
    response = _send(
        local_hub, "POST", f"{API}/ResidentChangeNotice", content=deep, headers=headers
    )
    assert (response.status_code, _code(response)) == (400, "RK-API004")
    finding = response.json()["findings"][0]
    assert "not JSON" not in finding["message_en"] and "nested" in finding["message_en"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        ("cp932", "application/json; charset=shift_jis", 415, "RK-API011"),
        ("cp932", "application/json", 400, "RK-API004"),
        ("bom", "application/json", 202, None),
        (b'{"Header": {"subject": NaN}}', "application/json", 400, "RK-API004"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "RK-API004"),
        (b"{}", "text/plain", 415, "RK-API001"),
    ],
)
def test_odd_json_bodies_get_a_coded_answer(
    local_hub: Hub, content: Any, content_type: str, status: int, code: str | None
) -> None:
    text = json.dumps(to_json(sample("ResidentChangeNotice")), ensure_ascii=False)
    body = {"cp932": text.encode("cp932"), "bom": b"\xef\xbb\xbf" + text.encode()}.get(
        content, content
    )
    headers = {"Content-Type": content_type}
    response = _send(
        local_hub, "POST", f"{API}/ResidentChangeNotice", content=body, headers=headers
    )
    assert response.status_code == status, response.text
    if code is not None:
        assert _code(response) == code


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"{API}/ResidentChangeNotice/"),
        ("GET", f"{API}/9b2f8c1e-7a43-4c1b-9d6e-2f1a3b4c5d6e/"),
        ("POST", "/api/v1/validate/"),
    ],
)
def test_a_slash_too_many_is_not_found_not_redirected(
    local_hub: Hub, method: str, path: str
) -> None:
    """Starlette redirected it (307) to an absolute http:// URL from the Host header: a
    client behind a TLS proxy following it sent the body again, in clear, to that address."""
    answer = _send(
        local_hub, method, path, content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert "location" not in answer.headers
    assert answer.status_code == 404 and _code(answer) == "RK-API006"


def test_the_console_typed_without_its_slash_still_opens(local_hub: Hub) -> None:
    answer = _send(local_hub, "GET", "/console")
    assert answer.status_code == 308 and answer.headers["location"] == "/console/"
