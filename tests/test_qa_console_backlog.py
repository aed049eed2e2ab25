"""The console over a backlog larger than one page, against a real hub (uvicorn, SQLite), over
plain HTTP, and in Chromium where the browser is the point (select-all, 戻る):

- the 配信不能 page says how many dead letters there are and how many it shows, filters by
  destination system, and says what select-all covers;
- the search pages through every match (keyset on the store's order), keeping its filters
  and the sealed subject;
- a start day after the end day and an unknown status are coded refusals on the form;
- an error page's 戻る returns to the page the operator came from (same site only);
- an import batch shows its file's name (escaped, never a path); older batches their hash.

The backlog is written straight into the Message Store's tables: 1,205 of Takeo's messages,
each with one dead delivery (1,200 to 税務, 5 to 固定資産税), three of them received at the
same instant astride the search's first page boundary.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import insert, select

from bus.hub import Hub as LocalHub
from bus.imports.generator import generate
from bus.imports.runner import ImportOptions, run_import
from bus.imports.worklist import Worklist
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import Delivery, StoredMessage
from tests.support.browser import chromium, log_in
from tests.support.hub_server import HubServer, hub_server

pytestmark = pytest.mark.console

TAKEO = "412066"
PASSWORD = "correct horse battery"
SUBJECT = "4119607677"  # a 宛名番号: the subject of every message of the backlog
MESSAGES, TO_KOTEI = 1205, 5
LATEST = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ROW_ID = re.compile(r'href="/console/messages/412066/([0-9a-f-]{36})"')
_NEXT = re.compile(r'<a id="next-page" href="([^"]+)"')
_BACK = re.compile(r'<a id="back" href="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Hub:
    server: HubServer
    data_dir: Path
    newest_first: list[str]  # the backlog's message ids in the store's order


def _received(i: int) -> datetime:
    """Message ``i``'s receipt: one second apart, but 99, 100 and 101 at the same instant
    (the first page ends between them)."""
    return LATEST - timedelta(seconds=100 if 99 <= i <= 101 else i)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("qa-console-backlog")
    with hub_server(tmp) as server:
        data_dir = tmp / "hub-data"
        store = open_store(Settings(data_dir=data_dir))
        try:
            for name in ("takeo.ops", "takeo.browser"):  # 10 logins a minute per account
                add_operator(store.sessions, name, PASSWORD, Role.OPERATOR, frozenset({TAKEO}))
            with store.sessions.begin() as session:
                ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(MESSAGES)]
                session.execute(
                    insert(StoredMessage),
                    [
                        {
                            "message_id": mid,
                            "tenant": TAKEO,
                            "system": "juki",
                            "service": "ResidentChangeNotice",
                            "kind": "notification",
                            "subject": SUBJECT,
                            "body": b"<x/>",
                            "body_digest": "0" * 64,
                            "received_at": _received(i),
                        }
                        for i, mid in enumerate(ids)
                    ],
                )
                pks = {
                    mid: pk
                    for mid, pk in session.execute(
                        select(StoredMessage.message_id, StoredMessage.id)
                    )
                }
                session.execute(
                    insert(Delivery),
                    [
                        {
                            "message_pk": pks[mid],
                            "destination": "kotei" if i < TO_KOTEI else "zeimu",
                            "tenant": TAKEO,
                            "subject_key": SUBJECT,
                            "sequence": i + 1,
                            "state": "dead",
                            "attempts": 8,
                            "next_attempt_at": LATEST,
                            "created_at": LATEST,
                            "finished_at": LATEST,
                            "last_error": "HTTP 400 Bad Request",
                        }
                        for i, mid in enumerate(ids)
                    ],
                )
                # the store's order: newest first, then the key (ties in insertion order)
                order = sorted(range(MESSAGES), key=lambda i: (-_received(i).timestamp(), i))
        finally:
            store.close()
        yield Hub(server, data_dir, [ids[i] for i in order])


@contextmanager
def _signed_in(hub: Hub) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=hub.server.url, timeout=60) as client:
        login = _CSRF.search(client.get("/console/login").text)
        assert login is not None
        form = {"csrf": login[1], "username": "takeo.ops", "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303
        found = _CSRF.search(client.get("/console/").text)
        assert found is not None
        yield client, found[1]


def _picks(page: str) -> int:
    return page.count('name="delivery"')


# --- 配信不能: counts, filter by destination, what select-all covers ------------------------


def test_the_dead_letters_page_says_how_many_there_are_and_how_many_it_shows(hub: Hub) -> None:
    with _signed_in(hub) as (client, _):
        page = client.get("/console/dead-letters").text
        client.cookies.set("renkei_lang", "en")
        english = client.get("/console/dead-letters").text
    assert _picks(page) == 1000
    assert "全 1,205 件のうち先頭 1,000 件を表示" in page
    assert "表示中の 1,000 件をすべて選択" in page  # what select-all covers
    assert "1,205 in all; the first 1,000 are shown" in english
    assert "Select all 1,000 shown" in english


def test_dead_letters_are_filtered_by_destination_and_the_filter_is_kept(hub: Hub) -> None:
    with _signed_in(hub) as (client, csrf):
        page = client.get("/console/dead-letters?destination=kotei").text
        assert _picks(page) == TO_KOTEI
        assert "全 5 件" in page and "先頭" not in page
        assert '<option value="kotei" selected>' in page
        first = re.search(r'name="delivery" value="(\d+)"', page)
        assert first is not None
        form = {
            "csrf": csrf,
            "delivery": first[1],
            "reason": "受信側の修正後に再送",
            "action": "discard",
            "destination": "kotei",
        }
        done = client.post("/console/dead-letters", data=form)
        assert done.status_code == 303
        assert parse_qs(urlsplit(done.headers["location"]).query)["destination"] == ["kotei"]
        assert "全 4 件" in client.get(done.headers["location"]).text


def test_an_unknown_destination_is_refused_not_shown_as_everything(hub: Hub) -> None:
    with _signed_in(hub) as (client, _):
        answer = client.get("/console/dead-letters?destination=nosuch")
    assert answer.status_code == 400 and "RK-CON007" in answer.text
    assert _picks(answer.text) == 0


# --- search: the next 100, keeping the filters ---------------------------------------------


def _walk(client: httpx.Client, first: str) -> tuple[list[str], list[str]]:
    """Every page from ``first`` by its "next 100" link: the ids in order, and the links."""
    found, links, url = [], [], first
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text[:300]
        found += _ROW_ID.findall(page.text.split('id="results"', 1)[1])
        following = _NEXT.search(page.text)
        url = unescape(following[1]) if following else ""
        if url:
            links.append(url)
    return found, links


def test_the_search_pages_through_every_match_in_the_stores_order(hub: Hub) -> None:
    with _signed_in(hub) as (client, _):
        found, links = _walk(client, f"/console/messages?tenant={TAKEO}")
    assert found == hub.newest_first  # none missed or repeated, ties at the boundary too
    assert len(links) == 12
    assert all(parse_qs(urlsplit(link).query)["tenant"] == [TAKEO] for link in links)


def test_the_next_page_keeps_the_sealed_subject_and_the_other_filters(hub: Hub) -> None:
    with _signed_in(hub) as (client, csrf):
        form = {"csrf": csrf, "subject": SUBJECT, "service": "ResidentChangeNotice"}
        posted = client.post("/console/messages", data=form)
        assert posted.status_code == 303
        first = posted.headers["location"]
        found, links = _walk(client, first)
    assert found == hub.newest_first
    sealed = parse_qs(urlsplit(first).query)["s"]
    for link in links:
        assert SUBJECT not in link
        params = parse_qs(urlsplit(link).query)
        assert params["s"] == sealed and params["service"] == ["ResidentChangeNotice"]


def test_an_altered_page_cursor_is_refused(hub: Hub) -> None:
    with _signed_in(hub) as (client, _):
        answer = client.get("/console/messages?after=yesterday")
    assert answer.status_code == 400 and "RK-CON001" in answer.text


# --- search: refusals on the form -----------------------------------------------------------


def test_a_start_day_after_the_end_day_is_refused_on_the_form_as_typed(hub: Hub) -> None:
    with _signed_in(hub) as (client, csrf):
        form = {"csrf": csrf, "date_from": "令和8年11月30日", "date_to": "2026-11-01"}
        posted = client.post("/console/messages", data=form)
        linked = client.get("/console/messages?date_from=2026-11-30&date_to=2026-11-01")
    for answer in (posted, linked):
        assert answer.status_code == 400 and "RK-CON006" in answer.text
        assert 'action="/console/messages"' in answer.text and 'id="results"' not in answer.text
    assert 'value="令和8年11月30日"' in posted.text and 'value="2026-11-01"' in posted.text


def test_an_unknown_status_is_refused_on_the_form(hub: Hub) -> None:
    with _signed_in(hub) as (client, csrf):
        linked = client.get("/console/messages?status=nosuch")
        posted = client.post("/console/messages", data={"csrf": csrf, "status": "nosuch"})
    for answer in (linked, posted):
        assert answer.status_code == 400 and "RK-CON007" in answer.text
        assert 'action="/console/messages"' in answer.text and 'id="results"' not in answer.text


# --- error pages: 戻る -----------------------------------------------------------------------


def test_back_from_an_error_page_returns_to_the_page_the_operator_came_from(hub: Hub) -> None:
    came_from = f"{hub.server.url}/console/dead-letters?destination=kotei"
    with _signed_in(hub) as (client, csrf):
        form = {"csrf": csrf, "reason": "再送", "action": "redeliver"}  # nothing selected
        refused = client.post("/console/dead-letters", data=form, headers={"Referer": came_from})
        assert refused.status_code == 400 and "RK-CON003" in refused.text
        back = _BACK.search(refused.text)
        assert back is not None and unescape(back[1]) == "/console/dead-letters?destination=kotei"
        for elsewhere in (
            "https://evil.example/console/dead-letters",
            f"{hub.server.url}//evil.example/console/",
            f"{hub.server.url}/api/v1/messages",
            "javascript:alert(1)",
        ):
            answer = client.post("/console/dead-letters", data=form, headers={"Referer": elsewhere})
            back = _BACK.search(answer.text)
            assert back is not None and back[1] == "/console/", elsewhere


# --- imports: the file's name -----------------------------------------------------------------


def test_an_import_batch_shows_its_files_name_and_an_older_batch_its_hash(hub: Hub) -> None:
    imports = hub.data_dir / "imports"
    named = Worklist(
        imports / f"{'e' * 32}-{TAKEO}.sqlite",
        "e" * 64,
        TAKEO,
        "utf-8",
        file_name="/srv/取込/登記済通知<b>2026.csv",
    )
    named.close()
    older = imports / f"{'f' * 32}-{TAKEO}.sqlite"  # a work file from before the name
    with sqlite3.connect(older) as db:
        db.execute(
            "create table batch (id integer primary key check (id = 1), file_hash text,"
            " tenant text, encoding text, cursor_offset integer, cursor_line integer,"
            " new integer, duplicate integer, errors integer, status text,"
            " last_commit_at text, pass_started_at text)"
        )
        db.execute(
            "insert into batch values (1, ?, ?, 'utf-8', 0, 1, 0, 0, 0, 'done', ?, ?)",
            ("f" * 64, TAKEO, LATEST.isoformat(), LATEST.isoformat()),
        )
    db.close()
    with _signed_in(hub) as (client, _):
        page = client.get("/console/imports").text
    assert "登記済通知&lt;b&gt;2026.csv" in page
    assert "/srv/" not in page and "取込/" not in page and "<b>2026" not in page
    assert f"{'f' * 16}…" in page  # the older batch: its hash, as before
    reopened = Worklist(older, "f" * 64, TAKEO, "utf-8")  # and the runner still opens it
    assert reopened.state.status == "done"
    reopened.close()


def test_an_import_records_its_files_name_for_the_console(tmp_path: Path) -> None:
    """``renkei import notices`` hands the file's name (its last part) to the work file."""
    notices = tmp_path / "受付" / "登記済通知_武雄.csv"
    notices.parent.mkdir()
    generate(notices, 3, encoding="utf-8")
    local = LocalHub.open(Settings(data_dir=tmp_path / "data"))
    try:
        run_import(local, ImportOptions(notices, TAKEO))
    finally:
        local.close()
    [work] = (tmp_path / "data" / "imports").glob("*.sqlite")
    with sqlite3.connect(work) as db:
        assert db.execute("select file_name from batch").fetchone() == ("登記済通知_武雄.csv",)
    db.close()


# --- in Chromium: what select-all covers, and 戻る after a refusal ---------------------------


def test_select_all_says_it_covers_the_shown_and_back_returns_to_the_filter(hub: Hub) -> None:
    with chromium() as browser:
        page = browser.new_context(locale="ja-JP").new_page()
        page.set_default_timeout(30_000)
        log_in(page, hub.server.url, "takeo.browser", PASSWORD)

        page.goto(f"{hub.server.url}/console/dead-letters")
        page.get_by_label("表示中の 1,000 件をすべて選択").check()
        assert page.locator("input.pick:checked").count() == 1000

        page.goto(f"{hub.server.url}/console/dead-letters")
        page.get_by_label("配信先").select_option("kotei")
        page.get_by_role("button", name="絞り込む").click()
        page.wait_for_url("**/console/dead-letters?destination=kotei")
        page.get_by_label("理由（必須）").fill("受信側の修正後に再送")
        page.get_by_role("button", name="再送").click()  # nothing selected: RK-CON003
        assert "RK-CON003" in page.content()
        page.get_by_role("link", name="戻る").click()
        page.wait_for_url("**/console/dead-letters?destination=kotei")
