"""The inbound REST adapter against a real uvicorn server: the JSON form and the XML through
the same pipeline, message status, synchronous inquiries, problem+json, API keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from adapters.rest.json_form import JsonFormError, to_json, to_xml
from adapters.rest.problem import PROBLEM_JSON, PROBLEM_XML
from bus.catalogue import NS_ENVELOPE
from bus.webapp import create_app
from tests.conftest import FINDING_KEYS, ApiCredentials
from tests.support.hub_server import SAMPLES, HubServer, hub_server, sample, serialize
from tests.support.receivers import wait_for

API = "/api/v1/messages"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("rest")) as server:
        yield server


def _message_id(document: etree._Element) -> str:
    return document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""


def _c14n(document: etree._Element) -> bytes:
    return etree.tostring(document, method="c14n2", strip_text=True)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SAMPLES.glob("*/*.xml") if "soap" not in p.name),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_json_form_round_trips_every_sample(path: Path) -> None:
    document = etree.parse(str(path)).getroot()
    form = json.loads(json.dumps(to_json(document), ensure_ascii=False))
    assert _c14n(etree.fromstring(to_xml(form))) == _c14n(document)


def test_json_form_keys_in_any_order_are_written_in_schema_order() -> None:
    form = to_json(sample("AddresseeInquiry"))
    body = form["AddresseeInquiry"]
    shuffled = {"Header": form["Header"], "AddresseeInquiry": dict(reversed(body.items()))}
    assert to_xml(shuffled) == to_xml(form)


@pytest.mark.parametrize(
    ("form", "path"),
    [
        ([], "/"),
        ({"Header": {"messageId": [["x"]]}}, "/Header/messageId"),
        ({"Header": {"messageId": {"a": {"b": {}}}}, "x y": "1"}, "/x y"),
        ({"Header": {"subject": "a\x01b"}}, "/Header/subject"),
        ({"Header": {"subject": {"$": "a", "child": "b"}}}, "/Header/subject/child"),
    ],
)
def test_json_form_that_is_not_xml_names_where(form: object, path: str) -> None:
    with pytest.raises(JsonFormError) as refused:
        to_xml(form)
    assert refused.value.path == path


def test_json_notification_is_accepted_stored_and_delivered(hub: HubServer) -> None:
    document = sample("NhiEligibilityNotice")
    message_id = _message_id(document)
    response = httpx.post(f"{hub.url}{API}/NhiEligibilityNotice", json=to_json(document))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["message_id"] == message_id and body["destinations"]
    assert response.headers["location"] == f"{API}/{message_id}"
    wait_for(lambda: message_id in hub.receiver.applied(), timeout=30)
    wait_for(
        lambda: httpx.get(f"{hub.url}{API}/{message_id}").json()["status"] == "delivered",
        timeout=30,
    )
    status = httpx.get(f"{hub.url}{API}/{message_id}").json()
    assert {d["destination"] for d in status["deliveries"]} == set(body["destinations"])
    assert all(d["state"] == "delivered" for d in status["deliveries"])


def test_xml_notification_is_accepted_and_a_resend_is_a_duplicate(hub: HubServer) -> None:
    data = serialize(sample("LevyNotice"))
    headers = {"Content-Type": "application/xml"}
    first = httpx.post(f"{hub.url}{API}/LevyNotice", content=data, headers=headers)
    again = httpx.post(f"{hub.url}{API}/LevyNotice", content=data, headers=headers)
    assert first.status_code == again.status_code == 202
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)


def test_json_inquiry_is_answered_with_a_correlated_reply(hub: HubServer) -> None:
    document = sample("DelinquencyInquiry")
    response = httpx.post(f"{hub.url}{API}/DelinquencyInquiry", json=to_json(document), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["correlation_id"] == body["message_id"] == _message_id(document)
    assert body["reply_message_id"] != body["message_id"]
    assert body["reply"]["Header"]["correlationId"] == body["message_id"]
    assert "DelinquencyInquiryReply" in body["reply"]


def test_xml_inquiry_with_accept_xml_gets_the_reply_document(hub: HubServer) -> None:
    document = sample("AddresseeInquiry")
    response = httpx.post(
        f"{hub.url}{API}/AddresseeInquiry",
        content=serialize(document),
        headers={"Content-Type": "application/xml", "Accept": "application/xml"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    reply = etree.fromstring(response.content)
    assert reply.findtext(f".//{{{NS_ENVELOPE}}}correlationId") == _message_id(document)


def test_invalid_message_is_problem_json_with_the_findings(hub: HubServer) -> None:
    document = sample("ResidentChangeNotice", "invalid-RK-DOM002-my-number-check-digit.xml")
    response = httpx.post(f"{hub.url}{API}/ResidentChangeNotice", json=to_json(document))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "urn:renkei:error:RK-DOM002" and problem["status"] == 422
    (finding,) = problem["findings"]
    assert list(finding)[: len(FINDING_KEYS)] == FINDING_KEYS
    assert finding["name_ja"] == "個人番号" and "*" in finding["value_masked"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "RK-API004"),
        (b'{"Header": {"subject": "\\u0001"}}', "application/json", 400, "RK-API004"),
        (b"<x/>", "text/plain", 415, "RK-API001"),
        (b"<!DOCTYPE x><x/>", "application/xml", 400, "RK-SEC001"),
    ],
)
def test_unreadable_input_is_refused_with_a_code(
    hub: HubServer, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = httpx.post(
        f"{hub.url}{API}/LevyNotice", content=content, headers={"Content-Type": content_type}
    )
    assert (response.status_code, response.json()["findings"][0]["code"]) == (status, code)


def test_unknown_service_and_unknown_message(hub: HubServer) -> None:
    unknown = httpx.post(f"{hub.url}{API}/Nope", json={})
    assert (unknown.status_code, unknown.json()["findings"][0]["code"]) == (404, "RK-API002")
    missing = httpx.get(f"{hub.url}{API}/00000000-0000-4000-8000-000000000000")
    assert (missing.status_code, missing.json()["findings"][0]["code"]) == (404, "RK-STO002")


def test_openapi_has_the_full_message_paths(hub: HubServer) -> None:
    spec = httpx.get(f"{hub.url}/openapi.json").json()
    post = spec["paths"][f"{API}/{{service}}"]["post"]
    assert {"application/json", "application/xml"} <= set(post["requestBody"]["content"])
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert "get" in spec["paths"][f"{API}/{{message_id}}"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PUT", f"{API}/LevyNotice", 405, "RK-API007"),
        ("DELETE", f"{API}/LevyNotice", 405, "RK-API007"),
        ("POST", f"{API}/", 404, "RK-API006"),
        ("GET", "/api/v1/nothing-here", 404, "RK-API006"),
        ("POST", "/api/v1", 404, "RK-API006"),
    ],
)
def test_framework_refusals_under_the_api_are_problem_json(
    hub: HubServer, method: str, path: str, status: int, code: str
) -> None:
    response = httpx.request(method, f"{hub.url}{path}", json={})
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert (problem["status"], problem["type"]) == (status, f"urn:renkei:error:{code}")
    assert [f["code"] for f in problem["findings"]] == [code]
    assert set(problem["findings"][0]) >= set(FINDING_KEYS)
    if status == 405:
        assert "POST" in response.headers["allow"] and method in problem["detail"]


def test_unreadable_parameters_under_the_api_are_problem_json() -> None:
    """No route of the hub's own has a parameter that can fail to convert; one that could
    (here a probe) is answered as documented (422, problem+json)."""
    app = create_app()

    @app.get("/api/v1/probe/{number}")
    def probe(number: int) -> int:
        return number

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.get("/api/v1/probe/not-a-number")

    response = asyncio.run(get())
    assert (response.status_code, response.headers["content-type"]) == (422, PROBLEM_JSON)
    assert [f["code"] for f in response.json()["findings"]] == ["RK-API008"]
    assert "number" in response.json()["findings"][0]["message_en"]


def test_openapi_documents_errors_as_they_are_sent(hub: HubServer) -> None:
    """Every error is a problem document: problem+json, and problem+xml too where the answer
    is negotiated (the messages POST and GET), except 406, which is always problem+json."""
    spec = httpx.get(f"{hub.url}/openapi.json").json()
    negotiated = {("post", f"{API}/{{service}}"), ("get", f"{API}/{{message_id}}")}
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    xml = (method, path) in negotiated and status != "406"
                    expected = [PROBLEM_JSON, PROBLEM_XML] if xml else [PROBLEM_JSON]
                    assert list(response.get("content", {})) == expected, (method, path, status)
    status_responses = spec["paths"][f"{API}/{{message_id}}"]["get"]["responses"]
    assert list(status_responses["422"]["content"]) == [PROBLEM_JSON, PROBLEM_XML]


@pytest.fixture(scope="module")
def keyed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubServer, str]]:
    """A hub whose juki holds an API key; the loopback allowlist is removed, so only the
    key identifies juki (as in production)."""
    from tests.conftest import config_with_api_key

    tmp = tmp_path_factory.mktemp("keyed")
    directory, key = config_with_api_key(tmp, "juki")
    credentials = ApiCredentials(directory, "juki", key)
    with hub_server(tmp, config_source=credentials.config_dir, loopback=False) as server:
        yield server, credentials.authorization


def test_api_key_identifies_the_caller(keyed_hub: tuple[HubServer, str]) -> None:
    hub, authorization = keyed_hub
    document = sample("ResidentChangeNotice")
    url = f"{hub.url}{API}/ResidentChangeNotice"
    anonymous = httpx.post(url, json=to_json(document))
    assert (anonymous.status_code, anonymous.json()["findings"][0]["code"]) == (401, "RK-AUT001")
    wrong = httpx.post(url, json=to_json(document), headers={"Authorization": "Bearer rk_x"})
    assert wrong.status_code == 401
    keyed = httpx.post(url, json=to_json(document), headers={"Authorization": authorization})
    assert keyed.status_code == 202, keyed.text
    status = httpx.get(
        f"{hub.url}{API}/{_message_id(document)}", headers={"Authorization": authorization}
    )
    assert status.status_code == 200 and status.json()["system"] == "juki"
    assert httpx.get(f"{hub.url}{API}/{_message_id(document)}").status_code == 401
