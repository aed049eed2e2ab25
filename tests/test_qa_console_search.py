"""The console's message search and failed deliveries as an operator meets them, against a real
hub (uvicorn, SQLite, dispatch workers, a recording receiver refusing one message):

- the search answers with a redirect to its results (Post/Redirect/Get), so the browser's back
  button from a message returns to them instead of Chromium's "resubmit the form" error page,
  and the subject (a 宛名番号) reaches the URL only sealed for the session;
- a date the search cannot use is a coded refusal shown on the search form as typed, never a
  500 (0001-01-01, 9999-12-31);
- a delivery error ("HTTP 400 Bad Request") is explained in Japanese;
- an import batch's state is in Japanese.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bus.imports.worklist import Worklist
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.browser import chromium, log_in
from tests.support.hub_server import HubServer, hub_server, serialize
from tests.support.towns import message, message_id

pytestmark = pytest.mark.console

TAKEO = "412066"
PASSWORD = "correct horse battery"
SUBJECT = "4119607677"  # the samples' Header subject (a 宛名番号)
XML = {"Content-Type": "application/xml"}
REFUSED_JA = "受信側システムがこのメッセージを受け付けませんでした"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True, slots=True)
class Hub:
    server: HubServer
    dead_id: str  # Takeo's NhiEligibilityNotice, refused (HTTP 400) by the receiver
    data_dir: Path


def _status(server: HubServer, mid: str) -> str:
    answer = httpx.get(f"{server.url}/api/v1/messages/{mid}", timeout=10)
    return str(answer.json().get("status")) if answer.status_code == 200 else ""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("qa-console")
    dead = message("NhiEligibilityNotice", TAKEO, "kokuho")
    dead_id = message_id(dead)
    with hub_server(tmp, receiver_args=("--fail-message-ids", dead_id)) as server:
        url = f"{server.url}/api/v1/messages/NhiEligibilityNotice"
        answer = httpx.post(url, content=serialize(dead), headers=XML, timeout=30)
        assert answer.status_code == 202, answer.text
        store = open_store(Settings(data_dir=tmp / "hub-data"))
        try:
            for name in ("takeo.ops", "takeo.other"):
                add_operator(store.sessions, name, PASSWORD, Role.OPERATOR, frozenset({TAKEO}))
        finally:
            store.close()
        deadline = time.monotonic() + 45
        while _status(server, dead_id) != "dead":
            assert time.monotonic() < deadline, "the message was not dead-lettered"
            time.sleep(0.2)
        yield Hub(server, dead_id, tmp / "hub-data")


@contextmanager
def _signed_in(hub: Hub, username: str = "takeo.ops") -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=hub.server.url, timeout=30) as client:
        login = _CSRF.search(client.get("/console/login").text)
        assert login is not None
        form = {"csrf": login[1], "username": username, "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303
        found = _CSRF.search(client.get("/console/").text)
        assert found is not None
        yield client, found[1]


def _results(page: str) -> str:
    return page.split('id="results"', 1)[1] if 'id="results"' in page else ""


# --- over HTTP ---------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["date_from=0001-01-01", "date_to=9999-12-31"])
def test_a_day_at_the_ends_of_the_calendar_is_refused_not_a_server_error(
    hub: Hub, query: str
) -> None:
    with _signed_in(hub) as (client, _):
        answer = client.get(f"/console/messages?{query}")
    assert answer.status_code == 400, answer.text[:200]
    assert "RK-CON004" in answer.text


def test_an_unreadable_date_shows_the_search_form_again_as_typed(hub: Hub) -> None:
    with _signed_in(hub) as (client, csrf):
        form = {
            "csrf": csrf,
            "message_id": hub.dead_id,
            "status": "dead",
            "subject": SUBJECT,
            "date_from": "令和8年2月30日",
        }
        answer = client.post("/console/messages", data=form)
    assert answer.status_code == 400 and "RK-CON004" in answer.text
    assert 'action="/console/messages"' in answer.text  # the form, not an error page
    assert f'name="message_id" value="{hub.dead_id}"' in answer.text
    assert 'value="令和8年2月30日"' in answer.text
    assert '<option value="dead" selected>' in answer.text
    assert not _results(answer.text)


def test_the_search_redirects_to_its_results_with_the_subject_sealed(hub: Hub) -> None:
    with _signed_in(hub) as (client, csrf):
        form = {"csrf": csrf, "subject": SUBJECT, "status": "dead", "message_id": ""}
        posted = client.post("/console/messages", data=form)
        assert posted.status_code == 303
        location = posted.headers["location"]
        assert SUBJECT not in location
        params = parse_qs(urlsplit(location).query)
        assert params["status"] == ["dead"] and "message_id" not in params
        results = client.get(location)
        assert results.status_code == 200
        assert hub.dead_id in _results(results.text)
        assert f'name="subject" value="{SUBJECT}"' in results.text  # the form as searched
        token = params["s"][0]
        altered = location.replace(token, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
        for refused in (altered, location.replace(token, "not-a-token")):
            answer = client.get(refused)
            assert answer.status_code == 400 and "RK-CON001" in answer.text
    with _signed_in(hub, "takeo.other") as (other, _):
        copied = other.get(location)  # another session's search link does not open
        assert copied.status_code == 400 and "RK-CON001" in copied.text
        assert SUBJECT not in copied.text


def test_a_refused_delivery_is_explained_in_japanese_and_english(hub: Hub) -> None:
    with _signed_in(hub) as (client, _):
        dead_letters = client.get("/console/dead-letters").text
        detail = client.get(f"/console/messages/{TAKEO}/{hub.dead_id}").text
        assert "HTTP 400 Bad Request" in dead_letters
        assert REFUSED_JA in dead_letters
        for table in ("deliveries", "attempts"):
            assert REFUSED_JA in detail.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
        client.get("/console/lang?to=en")
        english = client.get("/console/dead-letters").text
        assert "The receiving system refused this message" in english
        assert REFUSED_JA not in english


def test_an_import_batchs_state_is_shown_in_japanese(hub: Hub) -> None:
    name = f"{'d' * 32}-{TAKEO}"
    work = Worklist(hub.data_dir / "imports" / f"{name}.sqlite", "d" * 64, TAKEO, "utf-8")
    work.commit([], [], 100, 4)
    work.finish()
    work.close()
    with _signed_in(hub) as (client, _):
        page = client.get("/console/imports").text
    row = page.split(f"{'d' * 16}…", 1)[1].split("</tr>", 1)[0]
    assert "<td>完了</td>" in row and "<td>done</td>" not in row


# --- in Chromium -------------------------------------------------------------------------


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(locale="ja-JP")
        context.set_default_timeout(20_000)
        yield context.new_page()


def test_back_from_a_found_message_returns_to_the_results(hub: Hub, page: Any) -> None:
    log_in(page, hub.server.url, "takeo.ops", PASSWORD)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.get_by_role("link", name="メッセージ検索").click()
    page.get_by_label("サブジェクト（宛名番号等）").fill(SUBJECT)
    page.get_by_label("状態").select_option("dead")
    page.get_by_role("button", name="検索").click()
    page.get_by_role("link", name=hub.dead_id).click()
    page.wait_for_url(f"**/console/messages/{TAKEO}/{hub.dead_id}")
    assert requested and not [url for url in requested if SUBJECT in url]

    page.go_back()  # Chromium: ERR_CACHE_MISS ("confirm form resubmission") for a POST
    assert page.get_by_role("link", name=hub.dead_id).is_visible()
    assert page.get_by_label("サブジェクト（宛名番号等）").input_value() == SUBJECT
    assert page.get_by_label("状態").input_value() == "dead"
