"""The console's words, read over HTTP from a real hub: the attempt that dead-lettered a
delivery says so (not 再試行), the dashboard's 24-hour tiles say what they count, and English
pages use ASCII parentheses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.console.i18n import STATES, TEXTS
from bus.config.models import RetryPolicy
from bus.dispatch import operations
from bus.dispatch.worker import Worker
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.hub_server import HubServer, hub_server
from tests.support.receivers import Receiver
from tests.test_console import PASSWORD, _http_login
from tests.test_dispatch import TENANT, add_message, drain, hub_config, states

FULL_WIDTH = re.compile(r"[（）：]")
TWICE_DEAD = ["retry", "dead_retries", "retry", "dead_retries"]


@pytest.fixture(scope="module")
def console_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubServer, str]]:
    """A hub over a store holding a delivery dead-lettered twice for real (503 until its two
    attempts are spent, redelivered by an operator, spent again); its own workers off."""
    tmp = tmp_path_factory.mktemp("labels")
    store = open_store(Settings(data_dir=tmp / "hub-data"))
    try:
        with _failing_receiver(tmp) as url:
            policy = RetryPolicy(
                max_attempts=2,
                base_delay=timedelta(milliseconds=10),
                max_delay=timedelta(milliseconds=20),
            )
            message_id, (delivery,) = add_message(store.sessions, "A", ("juki",))
            worker = Worker(store.sessions, lambda: hub_config({"juki": url}, policy), None, "w")
            dead = lambda: states(store.sessions)[delivery] == "dead"  # noqa: E731
            drain(worker, dead)
            with store.sessions.begin() as session:
                operations.redeliver(session, [delivery], reason="受信側修正後に再送")
            drain(worker, dead)
            worker.close()
        add_operator(store.sessions, "hub.staff", PASSWORD, Role.OPERATOR, frozenset({"*"}))
    finally:
        store.close()
    with hub_server(tmp, env={"RENKEI_DISPATCH_WORKERS": "0"}) as hub:
        yield hub, message_id


@contextmanager
def _failing_receiver(tmp: Path) -> Iterator[str]:
    """A recording receiver answering 503 to everything."""
    receiver = Receiver(tmp, "failing").start("--fail-status", "503")
    try:
        yield receiver.url
    finally:
        receiver.stop()


def _attempt_labels(page: str) -> list[str]:
    table = page.split('<table id="attempts"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<span class="status [^"]*"[^>]*>([^<]*)</span>', table)


def test_the_attempt_that_dead_lettered_is_labelled_as_such(
    console_hub: tuple[HubServer, str],
) -> None:
    hub, message_id = console_hub
    with _http_login(hub, "hub.staff") as (client, _csrf):
        page = client.get(f"/console/messages/{TENANT}/{message_id}")
        assert page.status_code == 200
        assert _attempt_labels(page.text) == [STATES[key][0] for key in TWICE_DEAD]
        assert _attempt_labels(page.text)[-1] == "配信不能（再試行の上限）"
        client.cookies.set("renkei_lang", "en")
        english = client.get(f"/console/messages/{TENANT}/{message_id}").text
        assert _attempt_labels(english) == [STATES[key][1] for key in TWICE_DEAD]
        assert _attempt_labels(english)[-1] == "dead letter (retries exhausted)"


def test_dashboard_tiles_say_what_they_count(console_hub: tuple[HubServer, str]) -> None:
    hub, _ = console_hub
    with _http_login(hub, "hub.staff") as (client, _csrf):
        japanese = client.get("/console/").text
        client.cookies.set("renkei_lang", "en")
        english = client.get("/console/").text
    tiles = re.compile(r'<div class="tile[^"]*"><span>(.*?)</span><strong')
    assert tiles.findall(japanese)[0] == "受信件数（直近 24 時間）"  # received, not 検索
    assert "メッセージ検索（" not in japanese
    assert tiles.findall(japanese)[3] == "失敗した配信試行（直近 24 時間）"
    assert tiles.findall(english)[0] == "Messages received (last 24 hours)"
    assert tiles.findall(english)[3] == "Failed delivery attempts (last 24 hours)"


@pytest.mark.parametrize("path", ["/console/", "/console/messages", "/console/dead-letters"])
def test_english_pages_use_ascii_parentheses(console_hub: tuple[HubServer, str], path: str) -> None:
    hub, message_id = console_hub
    with _http_login(hub, "hub.staff") as (client, _csrf):
        client.cookies.set("renkei_lang", "en")
        for url in (path, f"/console/messages/{TENANT}/{message_id}"):
            page = client.get(url)
            assert page.status_code == 200
            assert not FULL_WIDTH.findall(page.text), (url, FULL_WIDTH.findall(page.text))


def test_english_words_have_no_full_width_punctuation() -> None:
    english = {key: en for key, (_, en) in (TEXTS | STATES).items()}
    assert {key: text for key, text in english.items() if FULL_WIDTH.search(text)} == {}
