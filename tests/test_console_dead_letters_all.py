"""The morning after an outage, in the console: thousands of dead letters across destinations
and tenants, against a real hub (uvicorn, SQLite, dispatch workers) over plain HTTP, and in
Chromium where the browser is the point:

- every dead letter can be reached, 1,000 a page (keyset on the delivery id, "next"), with the
  total, which of them are shown, counts per destination and per tenant, and a tenant filter;
- every dead letter matching the filters (and a why) can be redelivered or discarded at once,
  after a confirmation that says how many, as paged work answering with its progress (no
  request runs long), audited with the reason, within the operator's tenants only;
- letters that die after the confirmation was shown are left alone (by id and by time);
- the reason and the buttons come before the table (reachable with a few Tabs).

The backlog is written straight into the Message Store's tables (fast); the destinations the
bulk tests act on are paused, so what is redelivered stays pending for the assertions.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import insert, select, update

from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.audit import AuditEntry, append_audits
from bus.store.db import Store, open_store
from bus.store.models import AuditRecord, Delivery, DestinationState, StoredMessage
from tests.support.browser import chromium, log_in
from tests.support.hub_server import HubServer, hub_server

pytestmark = pytest.mark.console

TAKEO, KASHIMA = "412066", "412074"
PASSWORD = "correct horse battery"
DIED = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)  # the night of the outage
PAUSED = ("zeimu", "shuno", "tainou", "juki", "kotei")  # what the bulk tests act on stays pending
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_PICK = re.compile(r'name="delivery" value="(\d+)"')
_NEXT = re.compile(r'<a id="next-page" href="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class Backlog:
    server: HubServer
    data_dir: Path
    kokuho: list[int]  # 2,300 dead letters, Takeo's and Kashima's in turn (only read)
    zeimu_permanent: list[int]  # 10 refused by the destination
    zeimu_attempts: list[int]  # 20 whose retries ran out
    shuno: list[int]  # 2,100 of Takeo's: more than one step of the work
    tainou: dict[str, list[int]]  # 3 per tenant
    juki: list[int]  # 1,200 of Takeo's, for the browser


def _dead_letters(
    store: Store, destination: str, tenants: list[str], count: int, **delivery: object
) -> list[int]:
    """``count`` messages with one dead delivery each to ``destination`` (tenants in turn),
    each its own subject; returns the delivery ids."""
    rows = []
    for i in range(count):
        n = next(_counter)
        rows.append(
            {
                "message_id": f"00000000-0000-4000-8000-{n:012d}",
                "tenant": tenants[i % len(tenants)],
                "subject": f"{n:010d}",
            }
        )
    with store.sessions.begin() as session:
        session.execute(
            insert(StoredMessage),
            [
                row
                | {
                    "system": "juki",
                    "service": "ResidentChangeNotice",
                    "kind": "notification",
                    "body": b"<x/>",
                    "body_digest": "0" * 64,
                    "received_at": DIED,
                }
                for row in rows
            ],
        )
        pks = dict(
            session.execute(
                select(StoredMessage.message_id, StoredMessage.id).where(
                    StoredMessage.message_id.in_([row["message_id"] for row in rows])
                )
            ).all()
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "message_pk": pks[row["message_id"]],
                    "destination": destination,
                    "tenant": row["tenant"],
                    "subject_key": row["subject"],
                    "sequence": 1,
                    "state": "dead",
                    "attempts": 12,
                    "next_attempt_at": DIED,
                    "created_at": DIED,
                    "finished_at": DIED,
                    "last_error": "connection: ConnectionRefusedError",
                }
                | delivery
                for row in rows
            ],
        )
        ids = session.scalars(
            select(Delivery.id).where(Delivery.message_pk.in_(pks.values())).order_by(Delivery.id)
        )
        return list(ids)


def _why(store: Store, ids: list[int], why: str) -> None:
    """The worker's ``dead`` audit record saying why each of ``ids`` died."""
    with store.sessions.begin() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.tenant, Delivery.destination, StoredMessage.message_id)
            .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
            .where(Delivery.id.in_(ids))
        ).all()
        append_audits(
            session,
            [
                AuditEntry(
                    tenant=tenant,
                    event="dead",
                    message_id=message_id,
                    detail={"delivery": delivery, "destination": destination, "reason": why},
                )
                for delivery, tenant, destination, message_id in rows
            ],
        )


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backlog]:
    tmp = tmp_path_factory.mktemp("console-dead-all")
    with hub_server(tmp) as server:
        data_dir = tmp / "hub-data"
        store = open_store(Settings(data_dir=data_dir))
        try:
            for name, tenants in (
                ("hub.ops", {"*"}),
                ("hub.browser", {"*"}),
                ("takeo.ops", {TAKEO}),
            ):
                add_operator(store.sessions, name, PASSWORD, Role.OPERATOR, frozenset(tenants))
            add_operator(store.sessions, "takeo.view", PASSWORD, Role.VIEWER, frozenset({TAKEO}))
            with store.sessions.begin() as session:
                session.execute(
                    insert(DestinationState),
                    [
                        {"system": system, "paused": True, "reason": "test", "changed_at": DIED}
                        for system in PAUSED
                    ],
                )
            kokuho = _dead_letters(store, "kokuho", [TAKEO, KASHIMA], 2300)
            permanent = _dead_letters(store, "zeimu", [TAKEO], 10)
            attempts = _dead_letters(store, "zeimu", [TAKEO], 20)
            _why(store, permanent, "permanent")
            _why(store, attempts, "attempts")
            shuno = _dead_letters(store, "shuno", [TAKEO], 2100)
            tainou = {
                tenant: _dead_letters(store, "tainou", [tenant], 3) for tenant in (TAKEO, KASHIMA)
            }
            juki = _dead_letters(store, "juki", [TAKEO], 1200)
        finally:
            store.close()
        yield Backlog(server, data_dir, kokuho, permanent, attempts, shuno, tainou, juki)


@contextmanager
def _signed_in(backlog: Backlog, username: str = "hub.ops") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backlog.server.url, timeout=60) as client:
        login = _CSRF.search(client.get("/console/login").text)
        assert login is not None
        form = {"csrf": login[1], "username": username, "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303
        yield client


def _states(backlog: Backlog, ids: list[int]) -> dict[int, str]:
    store = open_store(Settings(data_dir=backlog.data_dir))
    try:
        with store.sessions() as session:
            rows = session.execute(select(Delivery.id, Delivery.state).where(Delivery.id.in_(ids)))
            return dict(rows.all())
    finally:
        store.close()


def _confirmation(client: httpx.Client, query: str) -> dict[str, str]:
    """The confirmation page's form (its hidden fields: csrf, filters, through, looked)."""
    page = client.get(f"/console/dead-letters/all?{query}")
    assert page.status_code == 200, page.text[:500]
    form = page.text.split('id="act-on-all"', 1)[1]
    return {name: unescape(value) for name, value in _HIDDEN.findall(form)}


def _act_on_all(client: httpx.Client, form: dict[str, str]) -> tuple[str, int]:
    """Submit the confirmed form and every progress form after it, as console.js does:
    (where it ends, how many steps it took)."""
    steps = 0
    while True:
        answer = client.post("/console/dead-letters/all", data=form)
        steps += 1
        if answer.status_code == 303:
            return answer.headers["location"], steps
        assert answer.status_code == 200, answer.text[:500]
        assert 'id="all-progress"' in answer.text
        following = answer.text.split('id="continue"', 1)[1]
        form = {name: unescape(value) for name, value in _HIDDEN.findall(following)}


# --- reaching every dead letter ---------------------------------------------------------------


def test_every_dead_letter_is_reached_a_thousand_at_a_time(backlog: Backlog) -> None:
    with _signed_in(backlog) as client:
        url, seen, pages = "/console/dead-letters?destination=kokuho", [], []
        while url:
            page = client.get(url)
            assert page.status_code == 200, page.text[:300]
            pages.append(page.text)
            seen += [int(found) for found in _PICK.findall(page.text)]
            following = _NEXT.search(page.text)
            url = unescape(following[1]) if following else ""
            if following:
                assert parse_qs(urlsplit(url).query)["destination"] == ["kokuho"]
    assert seen == backlog.kokuho  # none missed or repeated, oldest first
    assert "全 2,300 件のうち先頭 1,000 件を表示" in pages[0] and "次の 1,000 件" in pages[0]
    assert "全 2,300 件のうち 1,001〜2,000 件目を表示" in pages[1]
    assert "全 2,300 件のうち 2,001〜2,300 件目を表示" in pages[2]
    assert "次の" not in pages[2] and 'id="first-page"' in pages[2]


def test_counts_per_destination_and_tenant_and_the_tenant_filter(backlog: Backlog) -> None:
    with _signed_in(backlog) as client:
        page = client.get("/console/dead-letters").text
        takeo = client.get(f"/console/dead-letters?destination=kokuho&tenant={TAKEO}").text
        unknown = client.get("/console/dead-letters?tenant=999999")
        altered = client.get("/console/dead-letters?after=yesterday")
    assert '<option value="kokuho" >kokuho（2,300）</option>' in page
    assert f'<option value="{KASHIMA}" >{KASHIMA}（1,153）</option>' in page  # 1,150 + 3 tainou
    assert "全 1,150 件のうち先頭 1,000 件を表示" in takeo
    assert f"<td>{KASHIMA}</td>" not in takeo
    assert unknown.status_code == 400 and "RK-CON007" in unknown.text
    assert altered.status_code == 400 and "RK-CON001" in altered.text


# --- acting on all of them --------------------------------------------------------------------


def test_all_of_one_destination_is_redelivered_as_paged_work_with_progress(
    backlog: Backlog,
) -> None:
    with _signed_in(backlog) as client:
        form = _confirmation(client, "destination=shuno")
        # after the confirmation was shown: 3 new dead letters, and 2 that were being retried
        # then (older ids) die too; none of them is the operator's decision
        store = open_store(Settings(data_dir=backlog.data_dir))
        try:
            later = _dead_letters(store, "shuno", [TAKEO], 3, finished_at=datetime.now(UTC))
            retried = backlog.shuno[:2]
            with store.sessions.begin() as session:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(retried))
                    .values(finished_at=datetime.now(UTC) + timedelta(seconds=1))
                )
        finally:
            store.close()
        form |= {"action": "redeliver", "reason": "収納システム復旧後に再送", "confirm": "yes"}
        ended, steps = _act_on_all(client, form)
        assert steps >= 2  # 2,100 letters: more than one request, each answering its progress
        query = parse_qs(urlsplit(ended).query)
        assert query["done"] == ["redeliver"] and query["n"] == ["2098"]
        assert query["destination"] == ["shuno"]
        assert "処理しました: 再送 2,098" in client.get(ended).text
    states = _states(backlog, backlog.shuno + later)
    assert {states[d] for d in backlog.shuno[2:]} == {"pending"}
    assert {states[d] for d in retried + later} == {"dead"}  # left for the operator to see
    store = open_store(Settings(data_dir=backlog.data_dir))
    try:
        with store.sessions() as session:
            redelivered = session.scalars(
                select(AuditRecord.detail).where(AuditRecord.event == "redelivered")
            ).all()
    finally:
        store.close()
    shuno = [d for d in redelivered if d["destination"] == "shuno"]
    assert len(shuno) == 2098 and {d["reason"] for d in shuno} == {"収納システム復旧後に再送"}


def test_all_of_one_why_only(backlog: Backlog) -> None:
    with _signed_in(backlog) as client:
        page = client.get("/console/dead-letters/all?destination=zeimu").text
        assert '恒久エラー（受信側が拒否）</th><td class="num">10' in page
        form = _confirmation(client, "destination=zeimu")
        form |= {
            "action": "discard",
            "why": "permanent",
            "reason": "受信側で登録済み",
            "confirm": "yes",
        }
        ended, _ = _act_on_all(client, form)
    assert parse_qs(urlsplit(ended).query)["n"] == ["10"]
    states = _states(backlog, backlog.zeimu_permanent + backlog.zeimu_attempts)
    assert {states[d] for d in backlog.zeimu_permanent} == {"discarded"}
    assert {states[d] for d in backlog.zeimu_attempts} == {"dead"}


def test_a_towns_operator_acts_on_its_own_dead_letters_only(backlog: Backlog) -> None:
    with _signed_in(backlog, "takeo.ops") as client:
        assert client.get(f"/console/dead-letters/all?tenant={KASHIMA}").status_code == 400
        form = _confirmation(client, "destination=tainou")
        assert (
            '<td id="all-total" class="num">3</td>'
            in client.get("/console/dead-letters/all?destination=tainou").text
        )
        form |= {"action": "redeliver", "reason": "滞納管理復旧後に再送", "confirm": "yes"}
        refused = client.post("/console/dead-letters/all", data=form | {"tenant": KASHIMA})
        assert refused.status_code == 400 and "RK-CON007" in refused.text  # not among its own
        ended, _ = _act_on_all(client, form)
    assert parse_qs(urlsplit(ended).query)["n"] == ["3"]
    states = _states(backlog, backlog.tainou[TAKEO] + backlog.tainou[KASHIMA])
    assert {states[d] for d in backlog.tainou[TAKEO]} == {"pending"}
    assert {states[d] for d in backlog.tainou[KASHIMA]} == {"dead"}
    with _signed_in(backlog, "takeo.view") as client:
        assert client.get("/console/dead-letters/all").status_code == 403
        assert 'id="act-on-all"' not in client.get("/console/dead-letters").text


def test_acting_on_all_needs_the_confirmation_and_a_reason(backlog: Backlog) -> None:
    with _signed_in(backlog) as client:
        form = _confirmation(client, "destination=kokuho")
        form |= {"action": "discard", "reason": "確認なし"}
        unconfirmed = client.post("/console/dead-letters/all", data=form)
        reasonless = client.post(
            "/console/dead-letters/all", data=form | {"confirm": "yes", "reason": " "}
        )
        altered = client.post(
            "/console/dead-letters/all", data=form | {"confirm": "yes", "looked": "today"}
        )
    assert unconfirmed.status_code == 400 and "RK-CON003" in unconfirmed.text
    assert reasonless.status_code == 400 and "RK-CON002" in reasonless.text
    assert altered.status_code == 400 and "RK-CON001" in altered.text
    assert set(_states(backlog, backlog.kokuho).values()) == {"dead"}


# --- in Chromium: the keyboard, the page's load, the whole flow -------------------------------


def test_in_the_browser_an_operator_redelivers_all_of_a_destination(backlog: Backlog) -> None:
    with chromium() as browser:
        page = browser.new_context(locale="ja-JP").new_page()
        page.set_default_timeout(60_000)
        log_in(page, backlog.server.url, "hub.browser", PASSWORD)

        started = time.monotonic()
        page.goto(f"{backlog.server.url}/console/dead-letters")
        loaded = time.monotonic() - started
        print(
            f"\n/console/dead-letters with {page.locator('#dead-count').inner_text()}: "
            f"loaded in {loaded:.2f} s"
        )  # measured, not asserted
        page.get_by_role("button", name="絞り込む").focus()
        reached = []
        for _ in range(6):  # the action comes before the 1,000 rows
            page.keyboard.press("Tab")
            reached.append(
                page.evaluate("document.activeElement.name || document.activeElement.id")
            )
        assert "act-on-all" in reached and "reason" in reached, reached

        page.get_by_label("配信先").select_option("juki")
        page.get_by_role("button", name="絞り込む").click()
        page.wait_for_url("**/console/dead-letters?destination=juki*")
        page.get_by_role("link", name="まとめて処理").click()
        page.wait_for_url("**/console/dead-letters/all?destination=juki")
        assert page.locator("#all-total").inner_text() == "1,200"
        page.get_by_label("理由（必須）").fill("住民記録システム復旧後に再送")
        page.get_by_label("確認しました").check()
        page.get_by_role("button", name="すべて再送する").click()
        page.wait_for_url("**/console/dead-letters?destination=juki&done=redeliver*")
        assert "処理しました: 再送 1,200" in page.locator(".done").inner_text()
    assert set(_states(backlog, backlog.juki).values()) == {"pending"}


@pytest.mark.slow
def test_ten_thousand_are_redelivered_from_the_browser_without_a_long_request(
    backlog: Backlog,
) -> None:
    """10,000 dead letters of one destination: the work runs as several short requests (each
    at most ``STEP_SECONDS`` or ``STEP_PAGES``), the browser following them by itself."""
    store = open_store(Settings(data_dir=backlog.data_dir))
    try:
        kotei = _dead_letters(store, "kotei", [TAKEO], 10_000)
    finally:
        store.close()
    with chromium() as browser:
        page = browser.new_context(locale="ja-JP").new_page()
        page.set_default_timeout(120_000)
        log_in(page, backlog.server.url, "hub.browser", PASSWORD)
        started = time.monotonic()
        page.goto(f"{backlog.server.url}/console/dead-letters/all?destination=kotei")
        print(f"\nconfirmation over 10,000: {time.monotonic() - started:.2f} s")
        assert page.locator("#all-total").inner_text() == "10,000"
        page.get_by_label("理由（必須）").fill("固定資産税システム復旧後に再送")
        page.get_by_label("確認しました").check()
        steps: list[float] = []
        page.on(
            "response",
            lambda answer: (
                steps.append(time.monotonic())
                if answer.url.endswith("/console/dead-letters/all")
                else None
            ),
        )
        started = time.monotonic()
        page.get_by_role("button", name="すべて再送する").click()
        page.wait_for_url("**/console/dead-letters?destination=kotei&done=redeliver*")
        took = time.monotonic() - started
        longest = max(b - a for a, b in zip([started, *steps], steps, strict=False))
        print(f"10,000 redelivered in {took:.1f} s, {len(steps)} requests, longest {longest:.1f} s")
        assert "処理しました: 再送 10,000" in page.locator(".done").inner_text()
        assert len(steps) >= 5  # 10,000 / (STEP_PAGES x ALL_PAGE): paged work, not one request
    assert set(_states(backlog, kotei).values()) == {"pending"}
