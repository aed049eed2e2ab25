"""Accessibility of the web console (JIS X 8341-3:2016 level AA, i.e. WCAG 2.0/2.1 AA), in
real headless Chromium (Debian's ``chromium`` through Playwright) against a real hub:

- axe-core (the locked npm project in tests/a11y/node, injected into each page) finds no
  violation of the wcag2a/wcag2aa/wcag21a/wcag21aa rules on any page, with realistic data: a
  dead letter and a delivered message, a search with results and one refused (its error
  shown), the bulk dead-letter confirmation and its progress, an import batch, error pages;
- what axe cannot judge: a skip link first in the Tab order that moves focus to the content,
  a visible focus indicator, distinct page titles in Japanese, no horizontal scroll at
  320 CSS px (400 % of 1280 px; 200 % zoom is looser), status not by colour alone, form
  errors tied to their field;
- the bulk action's progress: a screen reader hears it (the page title and a described
  pause button that takes focus), and it can be paused (WCAG 2.2.2) and resumed.

One browser and one hub for the module (the pages share a session).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from bus.imports.worklist import ErrorRow, Worklist
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery, DestinationState, StoredMessage
from tests.support.browser import chromium, log_in
from tests.support.hub_server import HubServer, hub_server, serialize
from tests.support.towns import message, message_id

pytestmark = pytest.mark.console

AXE_PROJECT = Path(__file__).resolve().parent / "a11y" / "node"
AXE_SCRIPT = AXE_PROJECT / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
TAKEO, KASHIMA = "412066", "412074"
PASSWORD = "correct horse battery"
XML = {"Content-Type": "application/xml"}
DIED = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
BULK = 4100  # dead letters to paused 'tainou': three steps of the bulk work (2,000 a step)
BATCH = f"{'a' * 32}-{TAKEO}"


@dataclass(frozen=True, slots=True)
class A11yHub:
    hub: HubServer
    dead_id: str  # Takeo's NhiEligibilityNotice, refused by the receiver: dead-lettered


def _require_axe() -> Path:
    """axe-core's browser script from the locked npm project (``npm ci``, offline first), or
    skip (fail under RENKEI_REQUIRE_SERVICES=1) with the reason."""
    if not AXE_SCRIPT.is_file():
        reason = None
        if shutil.which("node") is None or shutil.which("npm") is None:
            reason = "Node.js/npm are not installed (apt-get install -y nodejs npm)"
        else:
            for extra in (["--offline"], []):
                command = ["npm", "ci", *extra, "--no-audit", "--no-fund"]
                done = subprocess.run(command, cwd=AXE_PROJECT, capture_output=True, timeout=300)
                if done.returncode == 0:
                    break
            else:
                reason = f"npm ci in {AXE_PROJECT} failed: {done.stderr.decode()[-300:]}"
        if reason is not None:
            if os.environ.get("RENKEI_REQUIRE_SERVICES") == "1":
                pytest.fail(f"RENKEI_REQUIRE_SERVICES=1 but {reason}")
            pytest.skip(reason)
    return AXE_SCRIPT


def _dead_letters(store: Store, destination: str, count: int) -> None:
    """``count`` of Takeo's messages with one dead delivery each to ``destination``."""
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(count)]
    with store.sessions.begin() as session:
        session.execute(
            insert(StoredMessage),
            [
                {
                    "message_id": mid,
                    "tenant": TAKEO,
                    "subject": f"{n:010d}",
                    "system": "juki",
                    "service": "ResidentChangeNotice",
                    "kind": "notification",
                    "body": b"<x/>",
                    "body_digest": "0" * 64,
                    "received_at": DIED,
                }
                for n, mid in enumerate(ids)
            ],
        )
        pks = session.execute(
            select(StoredMessage.id, StoredMessage.subject).where(StoredMessage.message_id.in_(ids))
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "message_pk": pk,
                    "destination": destination,
                    "tenant": TAKEO,
                    "subject_key": subject,
                    "sequence": 1,
                    "state": "dead",
                    "attempts": 12,
                    "next_attempt_at": DIED,
                    "created_at": DIED,
                    "finished_at": DIED,
                    "last_error": "connection: ConnectionRefusedError",
                }
                for pk, subject in pks
            ],
        )
        session.execute(
            insert(DestinationState),
            [{"system": destination, "paused": True, "reason": "点検中", "changed_at": DIED}],
        )


@pytest.fixture(scope="module")
def a11y_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[A11yHub]:
    tmp = tmp_path_factory.mktemp("console-a11y")
    dead = message("NhiEligibilityNotice", TAKEO, "kokuho")
    delivered = message("NhiEligibilityNotice", TAKEO, "kokuho")
    dead_id = message_id(dead)
    with hub_server(tmp, receiver_args=("--fail-message-ids", dead_id)) as hub:
        for document in (dead, delivered):
            url = f"{hub.url}/api/v1/messages/NhiEligibilityNotice"
            answer = httpx.post(url, content=serialize(document), headers=XML, timeout=30)
            assert answer.status_code == 202, answer.text
        store = open_store(Settings(data_dir=tmp / "hub-data"))
        try:
            add_operator(store.sessions, "hub.staff", PASSWORD, Role.OPERATOR, frozenset({"*"}))
            _dead_letters(store, "tainou", BULK)
        finally:
            store.close()
        work = Worklist(tmp / "hub-data" / "imports" / f"{BATCH}.sqlite", "a" * 64, TAKEO, "utf-8")
        work.commit([], [ErrorRow(3, 90, "receiptNumber", "RK-IMP002", "受付番号", "bad")], 100, 4)
        work.close()
        deadline = time.monotonic() + 45
        status = ""
        while status != "dead":
            assert time.monotonic() < deadline, f"not dead-lettered: {status}"
            time.sleep(0.2)
            answer = httpx.get(f"{hub.url}/api/v1/messages/{dead_id}", timeout=10)
            status = answer.json().get("status", "") if answer.status_code == 200 else ""
        yield A11yHub(hub, dead_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, a11y_hub: A11yHub) -> Iterator[Any]:
    """A signed-in page (the console's CSP stays on: axe is evaluated, not inserted)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ja-JP")
    context.set_default_timeout(20_000)
    opened = context.new_page()
    log_in(opened, a11y_hub.hub.url, "hub.staff", PASSWORD)
    yield opened
    context.close()


def _axe(page: Any, script: str) -> list[dict[str, Any]]:
    """axe-core's violations of the WCAG 2.0/2.1 A and AA rules on ``page``, shortened."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(script)
    result = page.evaluate(
        "tags => axe.run(document,"
        " {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        AXE_TAGS,
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
            "count": len(v["nodes"]),
        }
        for v in result["violations"]
    ]


def _pages(hub: A11yHub) -> list[tuple[str, Callable[[Any], None]]]:
    """Each console page a11y-checked, as (name, how to reach it from a signed-in page)."""
    url = hub.hub.url

    def go(path: str) -> Callable[[Any], None]:
        return lambda page: page.goto(f"{url}{path}")

    def search(page: Any) -> None:
        page.goto(f"{url}/console/messages")
        page.get_by_label("団体コード").select_option(TAKEO)
        page.get_by_role("button", name="検索").click()
        page.wait_for_selector("#results")

    def refused_search(page: Any) -> None:
        page.goto(f"{url}/console/messages")
        page.get_by_label("期間（開始日）").fill("令和99年13月1日")
        page.get_by_role("button", name="検索").click()
        page.wait_for_selector(".finding")

    return [
        ("dashboard", go("/console/")),
        ("messages", go("/console/messages")),
        ("messages: results", search),
        ("messages: refused", refused_search),
        ("message detail", go(f"/console/messages/{TAKEO}/{hub.dead_id}")),
        ("dead letters", go("/console/dead-letters?destination=zeimu")),
        ("dead letters: act on all", go("/console/dead-letters/all?destination=tainou")),
        ("destinations", go("/console/destinations")),
        ("configuration", go("/console/configuration")),
        ("imports", go("/console/imports")),
        ("health", go("/console/health")),
        ("error: not found", go("/console/messages/412066/no-such-message")),
        ("error: refused", go("/console/dead-letters?destination=nowhere")),
    ]


def test_axe_finds_no_wcag_aa_violation_on_any_page(a11y_hub: A11yHub, browser: Any) -> None:
    script = _require_axe().read_text(encoding="utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ja-JP")
    context.set_default_timeout(20_000)
    page = context.new_page()
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        page.goto(f"{a11y_hub.hub.url}/console/login")
        page.get_by_label("利用者名").fill("hub.staff")
        page.get_by_label("パスワード").fill("wrong password!")
        page.get_by_role("button", name="ログイン").click()
        page.wait_for_selector(".finding")
        found["login: refused"] = _axe(page, script)
        log_in(page, a11y_hub.hub.url, "hub.staff", PASSWORD)
        for name, reach in _pages(a11y_hub):
            reach(page)
            found[name] = _axe(page, script)
    finally:
        context.close()
    violations = {name: v for name, v in found.items() if v}
    assert not violations, json.dumps(violations, ensure_ascii=False, indent=1)


def _done_in_title(page: Any) -> int:
    """How many the bulk work has done, as its progress page's title says."""
    found = re.search(r"再送：([0-9,]+) 件処理済み・残り最大 [0-9,]+ 件", page.title())
    assert found is not None, page.title()
    return int(found[1].replace(",", ""))


def _focused(page: Any) -> dict[str, Any]:
    """The focused element: its id, tag, text and whether its focus ring can be seen."""
    return dict(
        page.evaluate(
            """() => {
              const e = document.activeElement, s = getComputedStyle(e);
              const r = e.getBoundingClientRect();
              return {id: e.id, tag: e.tagName.toLowerCase(), text: (e.textContent || '').trim(),
                      ring: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2,
                      seen: r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < innerHeight};
            }"""
        )
    )


def test_skip_link_focus_ring_and_tab_order(a11y_hub: A11yHub, page: Any) -> None:
    url = a11y_hub.hub.url
    blocked: list[str] = []  # anything the CSP refused (the fixes must not need it loosened)
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    # the skip link is the first Tab stop, shown when focused, and moves focus to the content
    page.goto(f"{url}/console/dead-letters?destination=zeimu")
    page.keyboard.press("Tab")
    first = _focused(page)
    assert first["text"] == "本文へ移動" and first["seen"] and first["ring"], first
    page.keyboard.press("Enter")
    assert _focused(page)["id"] == "main"
    # then the filters, the bulk link, the reason and the buttons before the table; every stop
    # shows its focus ring, and Tab leaves the page's end (no trap)
    stops = []
    for _ in range(60):
        page.keyboard.press("Tab")
        stop = _focused(page)
        if stop["tag"] == "body":
            break
        assert stop["ring"], stop
        stops.append(stop["text"] or stop["id"] or stop["tag"])
    else:
        pytest.fail(f"Tab never left the page: {stops}")
    assert stops.index("再送") < stops.index("破棄") < stops.index("select-all"), stops
    assert not blocked, blocked


@pytest.mark.slow
def test_titles_errors_and_reflow(a11y_hub: A11yHub, page: Any) -> None:
    """Every page at 320 CSS px (about 20 s on two cores; the default suite has the skip link
    and Tab order above, and axe's checks of every page)."""
    url = a11y_hub.hub.url
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    # titles: Japanese, one per page, the page's own words
    titles = {}
    for path in (
        "/console/",
        "/console/messages",
        f"/console/messages/{TAKEO}/{a11y_hub.dead_id}",
        "/console/dead-letters",
        "/console/dead-letters/all?destination=zeimu",
        "/console/destinations",
        "/console/configuration",
        "/console/imports",
        "/console/health",
        "/console/no-such-page",
    ):
        page.goto(f"{url}{path}")
        assert page.locator("html").get_attribute("lang") == "ja"
        titles[path] = page.title()
    assert len(set(titles.values())) == len(titles), titles
    assert titles["/console/no-such-page"].startswith("見つかりません"), titles
    assert all(t.endswith("— renkei 運用コンソール") for t in titles.values()), titles
    # a refused search: the error first, announced, tied to its field, which takes focus
    page.goto(f"{url}/console/messages")
    page.get_by_label("期間（終了日）").fill("令和99年13月1日")
    page.get_by_role("button", name="検索").click()
    page.wait_for_selector("#finding[role=alert]")
    assert page.title().startswith("入力エラー: メッセージ検索")
    field = page.get_by_label("期間（終了日）")
    assert field.get_attribute("aria-invalid") == "true"
    assert (field.get_attribute("aria-describedby") or "").split() == ["finding", "date-hint"]
    assert _focused(page)["tag"] == "input" and field.evaluate("e => e === document.activeElement")
    # reflow: at 320 CSS px (1280 px at 400 %) no page scrolls sideways; wide tables scroll
    # inside their own labelled, focusable region
    page.set_viewport_size({"width": 320, "height": 640})
    wide = {}
    for path in titles:
        page.goto(f"{url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 320:
            wide[path] = width
    assert not wide, wide
    assert not blocked, blocked


def test_bulk_progress_is_heard_can_be_paused_and_passes_axe(a11y_hub: A11yHub, page: Any) -> None:
    """The paged bulk redelivery of 4,100 dead letters (2,000 a step). The step the progress
    page's script asks for at once is answered 204 by the test (the browser then stays on the
    page), to act on it as a person would while that step is under way; it is sent again
    (as the step that answers) once paused."""
    posted: list[str] = []

    def step(route: Any) -> None:
        if route.request.method == "POST":
            posted.append(route.request.post_data or "")
            if len(posted) == 2:
                route.fulfill(status=204)
                return
        route.continue_()

    page.route("**/console/dead-letters/all", step)
    page.goto(f"{a11y_hub.hub.url}/console/dead-letters/all?destination=tainou")
    page.get_by_label("理由（必須）").fill("点検終了")
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="すべて再送する").click()
    page.wait_for_selector("#all-progress")
    deadline = time.monotonic() + 20
    while len(posted) < 2:  # its script continued by itself
        assert time.monotonic() < deadline, "the work did not continue by itself"
        page.wait_for_timeout(20)
    assert _axe(page, _require_axe().read_text(encoding="utf-8")) == []
    # heard: the title says how far it is; focus is on 一時停止, described by the progress
    first = _done_in_title(page)  # 2,000 (fewer when a step meets its time limit)
    assert 0 < first < BULK
    pause = page.locator("#pause")
    assert pause.is_visible() and _focused(page)["id"] == "pause"
    assert pause.get_attribute("aria-describedby") == "all-progress"
    assert page.locator("progress").get_attribute("aria-label") == "一括処理の進み具合"
    # paused with Esc; the step under way answers, and its page stops there
    page.keyboard.press("Escape")
    assert "一時停止します" in (page.locator("#all-progress").text_content() or "")
    assert _focused(page)["id"] == "resume" and not pause.is_visible()
    page.evaluate("document.getElementById('continue').submit()")
    page.wait_for_function(
        "document.getElementById('all-progress').textContent.includes('一時停止中')"
    )
    assert first < _done_in_title(page) < BULK
    page.wait_for_timeout(300)
    assert len(posted) == 3, "the paused work continued"
    assert _focused(page)["id"] == "resume" and not pause.is_visible()
    # resumed with 続ける (focused): the last 100, then the list says how many
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/dead-letters?**")
    assert len(posted) >= 4
    assert page.title().startswith("処理しました（再送 4,100）")
    assert "再送 4,100" in (page.locator("p.done[role=status]").text_content() or "")
