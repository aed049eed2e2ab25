"""The web console as a screen reader (NVDA, PC-Talker) reads it: Chromium's accessibility tree
(CDP ``Accessibility.getFullAXTree``), not the HTML, in real headless Chromium against a real
hub; axe-core's rule checks are in tests/test_console_a11y.py.

What a blind member of staff hears, page by page: the landmarks and one h1 with h2s under it
(no skipped level), a skip link to the main content, every button, field, list and checkbox
named in Japanese, every table named; each dead letter's checkbox says which delivery it picks
(the destination and the message: two deliveries of one message are two different names); a
table's rows named by their destination (row headers); a masked number read as マスク済み、
末尾 7 rather than nine アスタリスク; a refused search's coded error in an alert, its field
invalid and described by it, focused; 処理しました in a status after a redelivery; a
resident's 開示請求 trail opening on its summary (focused), the number read masked.

The browser test is slow (a hub and a browser: about 15 s); the light tests below check the
same properties on the templates' HTML (rendered by the console's own Jinja environment and
words, read with lxml).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import html as lxml_html

from adapters.console.dashboard import Dashboard, DestinationFigures
from adapters.console.dead_letters import Choices, Filters
from adapters.console.rendering import TEMPLATES, environment, words
from bus import __version__
from bus.dispatch.operations import DeadLetter
from bus.security.operators import Operator, Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.queries import MessageStatus
from bus.store.trail import SUBJECT, Provision, ResidentTrail, TrailMessage
from bus.store.trail_report import timeline
from tests.support.browser import chromium, log_in
from tests.support.hub_server import HubServer, hub_server, serialize
from tests.support.towns import message, message_id

pytestmark = pytest.mark.console

TAKEO = "412066"
PASSWORD = "correct horse battery"
XML = {"Content-Type": "application/xml"}
RESIDENT = "4119607677"  # the samples' subject (宛名番号), read masked: *********7
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
ASTERISKS = re.compile(r"\*{3,}[0-9]+")  # a masked number as the eye sees it
CONTROLS = {"button", "textbox", "combobox", "checkbox", "radio", "searchbox", "spinbutton"}
AT = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


# ---- the accessibility tree, read in order -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    role: str
    name: str
    description: str
    properties: dict[str, Any]
    focused: bool


def read_aloud(page: Any) -> list[Node]:
    """The page's accessibility tree in reading order, without what a screen reader skips
    (ignored nodes, and the generic containers it does not announce)."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    by_id = {n["nodeId"]: n for n in nodes}
    read: list[Node] = []

    def walk(node: dict[str, Any]) -> None:
        role = node.get("role", {}).get("value", "")
        if not node.get("ignored") and role not in ("generic", "none", "InlineTextBox"):
            props = {p["name"]: p["value"].get("value") for p in node.get("properties", [])}
            read.append(
                Node(
                    role,
                    str(node.get("name", {}).get("value", "")).strip(),
                    str(node.get("description", {}).get("value", "")).strip(),
                    props,
                    bool(props.get("focused")) and role != "RootWebArea",  # (the page's)
                )
            )
        for child in node.get("childIds", []):
            if child in by_id:
                walk(by_id[child])

    walk(nodes[0])
    return read


def _outline(read: list[Node]) -> list[int]:
    return [int(n.properties["level"]) for n in read if n.role == "heading"]


def _heard_on_every_page(read: list[Node], page: str) -> None:
    """Landmarks, one h1 then h2s without a skipped level, every control named in Japanese,
    every table named, and no masked number read as its asterisks."""
    roles = [n.role for n in read]
    assert {"banner", "main", "contentinfo"} <= set(roles), (page, roles)
    assert read[1].role == "link" and read[1].name == "本文へ移動", (page, read[1])
    levels = _outline(read)
    assert levels[:1] == [1] and levels.count(1) == 1, (page, levels)
    assert all(b - a <= 1 for a, b in pairwise(levels)), (page, levels)
    unnamed = [n for n in read if n.role in CONTROLS | {"link", "table"} and not n.name]
    assert not unnamed, (page, unnamed)
    english = [n for n in read if n.role in CONTROLS and not JAPANESE.search(n.name)]
    assert not english, (page, english)
    asterisks = [
        n.name
        for n in read
        if n.role == "StaticText" and ASTERISKS.search(n.name) and "<" not in n.name
    ]  # (a masked XML body is code, read as it is)
    assert not asterisks, (page, asterisks)


# ---- a real hub with a dead letter at two destinations --------------------------------------


@dataclass(frozen=True, slots=True)
class ReaderHub:
    hub: HubServer
    dead_id: str  # refused by the receiver at both of its destinations (zeimu, shuno)


@pytest.fixture(scope="module")
def reader_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReaderHub]:
    tmp = tmp_path_factory.mktemp("console-screen-reader")
    dead = message("NhiEligibilityNotice", TAKEO, "kokuho")
    dead_id = message_id(dead)
    with hub_server(tmp, receiver_args=("--fail-message-ids", dead_id)) as hub:
        for document in (dead, message("NhiEligibilityNotice", TAKEO, "kokuho")):
            url = f"{hub.url}/api/v1/messages/NhiEligibilityNotice"
            answer = httpx.post(url, content=serialize(document), headers=XML, timeout=30)
            assert answer.status_code == 202, answer.text
        store = open_store(Settings(data_dir=tmp / "hub-data"))
        try:
            add_operator(store.sessions, "hub.staff", PASSWORD, Role.OPERATOR, frozenset({"*"}))
        finally:
            store.close()
        deadline, status = time.monotonic() + 45, ""
        while status != "dead":
            assert time.monotonic() < deadline, f"not dead-lettered: {status}"
            time.sleep(0.2)
            answer = httpx.get(f"{hub.url}/api/v1/messages/{dead_id}", timeout=10)
            status = answer.json().get("status", "") if answer.status_code == 200 else ""
        yield ReaderHub(hub, dead_id)


@pytest.mark.slow
def test_each_page_read_aloud_makes_sense(reader_hub: ReaderHub) -> None:
    url = reader_hub.hub.url
    dead_id = reader_hub.dead_id
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ja-JP")
        context.set_default_timeout(20_000)
        page = context.new_page()
        log_in(page, url, "hub.staff", PASSWORD)

        # the dashboard: each figure's row is named by its destination
        read = read_aloud(page)
        _heard_on_every_page(read, "dashboard")
        assert {"zeimu", "shuno"} <= {n.name for n in read if n.role == "rowheader"}

        # the dead letters: each checkbox says which delivery (two of one message differ)
        page.goto(f"{url}/console/dead-letters")
        read = read_aloud(page)
        _heard_on_every_page(read, "dead letters")
        boxes = [n.name for n in read if n.role == "checkbox"][1:]  # after 表示中の…すべて選択
        assert len(boxes) == len(set(boxes)) == 2, boxes
        for destination in ("zeimu", "shuno"):
            (box,) = [b for b in boxes if b.startswith(f"{destination} への配信を選択")]
            assert dead_id in box and "NhiEligibilityNotice" in box, box

        # redelivered with a reason: 処理しました is in a status (and the title, read first)
        page.get_by_role("checkbox", name="zeimu への配信を選択").check()
        page.get_by_label("理由（必須）").fill("受信側の修正後に再送")
        page.get_by_role("button", name="再送", exact=True).click()
        page.wait_for_selector("p.done")
        read = read_aloud(page)
        assert page.title().startswith("処理しました（再送 1）")
        assert any(n.role == "status" for n in read)
        assert "処理しました: 再送 1" in [n.name for n in read if n.role == "StaticText"]

        # the message: every table named (配信試行 too), deliveries named by destination,
        # the subject read masked
        page.goto(f"{url}/console/messages/{TAKEO}/{dead_id}")
        read = read_aloud(page)
        _heard_on_every_page(read, "message")
        assert "配信試行" in [n.name for n in read if n.role == "table"]
        assert {"zeimu", "shuno"} <= {n.name for n in read if n.role == "rowheader"}
        assert "マスク済み、末尾 7" in [n.name for n in read if n.role == "cell"]

        # a search, then a refused one: the coded error in an alert, the field invalid,
        # described by it and focused
        page.goto(f"{url}/console/messages")
        page.get_by_label("団体コード").select_option(TAKEO)
        page.get_by_role("button", name="検索").click()
        page.wait_for_selector("#results")
        read = read_aloud(page)
        _heard_on_every_page(read, "search results")
        assert re.match(r"メッセージ検索（検索結果: 2）", page.title()), page.title()
        page.get_by_label("期間（開始日）").fill("令和99年13月1日")
        page.get_by_role("button", name="検索").click()
        page.wait_for_selector("#finding")
        read = read_aloud(page)
        _heard_on_every_page(read, "search refused")
        (alert,) = [i for i, n in enumerate(read) if n.role == "alert"]
        assert "RK-CON004" in " ".join(n.name for n in read[alert : alert + 4])
        (field,) = [n for n in read if n.focused]
        assert field.name == "期間（開始日）" and field.properties.get("invalid") == "true"
        assert field.description.startswith("RK-CON004")

        # the 開示請求 trail: it opens on its summary, focused, the number read masked
        page.goto(f"{url}/console/trail")
        _heard_on_every_page(read_aloud(page), "trail")
        page.get_by_label("団体コード").select_option(TAKEO)
        page.get_by_label("宛名番号").fill(RESIDENT)
        page.get_by_role("button", name="画面に表示").click()
        page.wait_for_selector("#trail")
        read = read_aloud(page)
        _heard_on_every_page(read, "trail found")
        (summary,) = [n for n in read if n.focused]
        assert summary.role == "heading" and summary.properties["level"] == 2, summary
        heard = r"団体 412066・宛名番号 マスク済み、末尾 7 ?：メッセージ 2 件"
        assert re.match(heard, summary.name), summary
        assert "マスク済み、末尾 7" in page.title()
        assert RESIDENT not in page.content()
        context.close()


# ---- light: the same on the templates' HTML --------------------------------------------------


def _render(template: str, **context: Any) -> Any:
    """``template`` rendered as the console renders it (its Jinja environment and its words,
    in Japanese), parsed by lxml."""
    hub_staff = Operator("hub.staff", Role.OPERATOR, frozenset({"*"}))
    page = (
        environment()
        .get_template(template)
        .render(
            **words("ja"),
            operator=hub_staff,
            csrf="token",
            path=f"/console/{template}",
            here="/console/",
            version=__version__,
            finding=None,
            done=None,
            **context,
        )
    )
    return lxml_html.fromstring(page)


def _dead(delivery: int, destination: str, message: str) -> DeadLetter:
    return DeadLetter(
        delivery, message, "NhiEligibilityNotice", TAKEO, destination, 1, 3, "HTTP 400", AT, ()
    )


def test_each_dead_letter_checkbox_names_its_delivery() -> None:
    shown = [_dead(1, "zeimu", "m-1"), _dead(2, "shuno", "m-1"), _dead(3, "zeimu", "m-2")]
    page = _render(
        "dead_letters.html",
        dead=shown,
        total=3,
        first=1,
        last=3,
        next_after=None,
        filters=Filters(),
        query="",
        choices=Choices([("shuno", 1), ("zeimu", 2)], [(TAKEO, 3)]),
    )
    names = [box.get("aria-label") for box in page.xpath("//input[@class='pick']")]
    assert names == [
        "zeimu への配信を選択（NhiEligibilityNotice、メッセージ ID m-1）",
        "shuno への配信を選択（NhiEligibilityNotice、メッセージ ID m-1）",
        "zeimu への配信を選択（NhiEligibilityNotice、メッセージ ID m-2）",
    ]


def test_dashboard_rows_are_named_by_their_destination_and_service() -> None:
    figures = Dashboard(
        [("NhiEligibilityNotice", TAKEO, 2)],
        [],
        [DestinationFigures("zeimu", TAKEO, 1, 1, 0, 1)],
        {"messages": 2, "pending": 1, "dead": 1, "failed_attempts": 1},
    )
    page = _render("dashboard.html", figures=figures)
    headers = page.xpath("//tbody/tr/*[1]")
    assert [(h.tag, h.get("scope"), h.text) for h in headers] == [
        ("th", "row", "NhiEligibilityNotice"),
        ("th", "row", "zeimu"),
    ]


def test_the_trail_opens_on_its_summary_and_reads_the_number_masked() -> None:
    masked = "*********7"
    found = ResidentTrail(
        TAKEO,
        masked,
        None,
        [
            TrailMessage(
                1,
                "m-1",
                "kokuho",
                "NhiEligibilityNotice",
                "notification",
                masked,
                SUBJECT,
                AT,
                MessageStatus.DEAD,
                None,
                None,
            )
        ],
        [Provision("m-1", "zeimu", "delivery", "dead", 3, AT, None)],
    )
    page = _render(
        "trail.html",
        tenants=[TAKEO],
        query={"tenant": TAKEO, "since": ""},
        found=found,
        events=timeline(found),
        sealed="sealed",
        with_wareki=False,
    )
    (summary,) = page.xpath("//h2[@id='trail-heading']")
    assert summary.get("tabindex") == "-1" and summary.get("autofocus") is not None
    spoken = "マスク済み、末尾 7"
    for where in (summary, *page.xpath("//table[@id='trail']//td")):
        for hidden in where.xpath(".//*[@aria-hidden='true']"):
            assert hidden.text == masked  # the asterisks only for the eye
        text = "".join(where.xpath(".//text()[not(ancestor::*[@aria-hidden='true'])]"))
        assert not ASTERISKS.search(text), text
    assert spoken in summary.text_content()
    assert spoken in page.findtext(".//title")


def test_every_table_has_a_name() -> None:
    """Each ``<table>`` in the templates is named: aria-labelledby, aria-label or a caption."""
    unnamed = []
    for template in sorted(TEMPLATES.glob("*.html")):
        text = template.read_text(encoding="utf-8")
        for found in re.finditer(r"<table\b[^>]*>", text):
            after = text[found.end() :].lstrip()
            if "aria-label" not in found[0] and not after.startswith("<caption"):
                unnamed.append(f"{Path(template).name}: {found[0]}")
    assert not unnamed, unnamed
