"""The web console end to end: a real hub (uvicorn, SQLite, dispatch workers, a recording
receiver playing every connected system) driven in real headless Chromium (Debian's
``chromium`` through Playwright's Python package; no browser download).

Takeo's operator logs in, finds a dead-lettered message, reads it masked and then unmasked
with a reason (閲覧ログ), redelivers it once the receiver is back and sees it delivered;
Kashima's viewer sees Kashima's messages only (in the UI and by direct URL). Screenshots go
to a temporary directory, or to docs/images/ with ``RENKEI_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bus.catalogue import NS_STANDARD
from bus.dispatch.outcomes import hold_destinations
from bus.imports.worklist import ErrorRow, Worklist
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.db import open_store
from bus.store.models import AuditRecord
from tests.support.browser import chromium
from tests.support.hub_server import HubServer, hub_server, serialize
from tests.support.towns import message, message_id

pytestmark = pytest.mark.console

TAKEO, KASHIMA = "412066", "412074"
PASSWORD = "correct horse battery"
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
NAME_IN_SAMPLE = "中島　ヨシ"  # std:name of samples/messages/NhiEligibilityNotice/valid-full.xml
XML = {"Content-Type": "application/xml"}
SUBJECT = "4119607677"  # the samples' Header subject (a 宛名番号)


@dataclass(frozen=True, slots=True)
class ConsoleHub:
    hub: HubServer
    dead_id: str  # Takeo's NhiEligibilityNotice, refused by the receiver: dead-lettered
    kashima_id: str  # Kashima's NhiEligibilityNotice, delivered
    shots: Path
    tmp: Path


def _wait(until: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _status(hub: HubServer, mid: str) -> str:
    answer = httpx.get(f"{hub.url}/api/v1/messages/{mid}", timeout=10)
    return str(answer.json().get("status")) if answer.status_code == 200 else ""


@pytest.fixture(scope="module")
def console_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleHub]:
    tmp = tmp_path_factory.mktemp("console")
    dead = message("NhiEligibilityNotice", TAKEO, "kokuho")
    other = message("NhiEligibilityNotice", KASHIMA, "kokuho")
    for number in other.iter(f"{{{NS_STANDARD}}}addresseeNumber"):
        number.text = "4119607670"  # a wrong check digit: accepted with warning RK-DOM004
    dead_id, kashima_id = message_id(dead), message_id(other)
    with hub_server(tmp, receiver_args=("--fail-message-ids", dead_id)) as hub:
        for document in (dead, other):
            url = f"{hub.url}/api/v1/messages/NhiEligibilityNotice"
            answer = httpx.post(url, content=serialize(document), headers=XML, timeout=30)
            assert answer.status_code == 202, answer.text
        store = open_store(Settings(data_dir=tmp / "hub-data"))
        try:
            add_operator(store.sessions, "takeo.ops", PASSWORD, Role.OPERATOR, frozenset({TAKEO}))
            add_operator(
                store.sessions, "kashima.view", PASSWORD, Role.VIEWER, frozenset({KASHIMA})
            )
            add_operator(store.sessions, "hub.staff", PASSWORD, Role.OPERATOR, frozenset({"*"}))
        finally:
            store.close()
        _wait(lambda: _status(hub, dead_id) == "dead" and _status(hub, kashima_id) == "delivered")
        shots = DOCS_IMAGES if os.environ.get("RENKEI_SCREENSHOTS") == "1" else tmp / "shots"
        shots.mkdir(parents=True, exist_ok=True)
        yield ConsoleHub(hub, dead_id, kashima_id, shots, tmp)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1180, "height": 760}, locale="ja-JP")
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def _log_in(page: Any, url: str, username: str) -> None:
    page.goto(f"{url}/")
    assert "/console/login" in page.url
    assert page.locator("html").get_attribute("lang") == "ja"
    page.get_by_label("利用者名").fill(username)
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    page.wait_for_url("**/console/")


def test_operator_finds_unmasks_and_redelivers_a_dead_letter(
    console_hub: ConsoleHub, new_page: Callable[[], Any]
) -> None:
    hub, dead_id = console_hub.hub, console_hub.dead_id
    page = new_page()
    page.goto(f"{hub.url}/")
    page.screenshot(path=str(console_hub.shots / "console-login.png"))
    page.get_by_label("利用者名").fill("takeo.ops")
    page.get_by_label("パスワード").fill("wrong password!")
    page.get_by_role("button", name="ログイン").click()
    assert "RK-AUT012" in page.locator(".finding").inner_text()

    _log_in(page, hub.url, "takeo.ops")
    assert page.locator("#total-dead").inner_text() != "0"
    page.screenshot(path=str(console_hub.shots / "console-dashboard.png"), full_page=True)

    # find the message by its id, open it: masked, with its failed attempts
    page.get_by_role("link", name="メッセージ検索").click()
    page.get_by_label("メッセージ ID").fill(dead_id)
    page.get_by_role("button", name="検索").click()
    found = page.get_by_role("link", name=dead_id)
    found.wait_for()  # the results page has loaded: a capture mid-navigation fails
    page.screenshot(path=str(console_hub.shots / "console-search.png"))
    found.click()
    assert page.locator("#message-status").get_attribute("data-status") == "dead"
    assert page.locator("#message-status").inner_text() == "配信不能"
    assert "400" in page.locator("#attempts").inner_text()
    assert NAME_IN_SAMPLE not in page.locator("#body-masked").inner_text()
    page.screenshot(path=str(console_hub.shots / "console-message.png"))

    # unmasked only with a reason, and the reading is in the audit trail (閲覧ログ)
    page.get_by_label("閲覧理由").fill("住民からの問合せ対応")
    page.get_by_role("button", name="マスク解除して表示").click()
    assert NAME_IN_SAMPLE in page.locator("#body-clear").inner_text()
    assert "unmasked" in page.locator("#audit").inner_text()

    # the receiver is back: redeliver the dead letter and watch it delivered
    console_hub.hub.receiver.stop()
    console_hub.hub.receiver.start()
    page.get_by_role("link", name="配信不能（デッドレター）").click()
    page.screenshot(path=str(console_hub.shots / "console-dead-letters.png"), full_page=True)
    for box in page.get_by_role("checkbox", name=f"メッセージ ID {dead_id}").all():
        box.check()
    page.get_by_label("理由（必須）").fill("受信側の障害復旧のため再送")
    page.get_by_role("button", name="再送").click()
    assert "処理しました" in page.locator(".done").inner_text()

    detail = f"{hub.url}/console/messages/{TAKEO}/{dead_id}"

    def delivered() -> bool:
        page.goto(detail)
        return page.locator("#message-status").get_attribute("data-status") == "delivered"

    _wait(delivered)
    assert dead_id in console_hub.hub.receiver.applied()
    audit = page.locator("#audit").inner_text()
    assert "redelivered" in audit and "console:takeo.ops" in audit

    for name in ("destinations", "imports", "health"):
        page.goto(f"{hub.url}/console/{name}")
        page.screenshot(path=str(console_hub.shots / f"console-{name}.png"))
    assert "正常" in page.locator("#checks").inner_text()

    # another town's message is not there, even by direct URL
    other = page.goto(f"{hub.url}/console/messages/{KASHIMA}/{console_hub.kashima_id}")
    assert other is not None and other.status == 404

    page.get_by_role("link", name="English").click()
    assert page.locator("h1").inner_text() == "Not found."
    page.goto(f"{hub.url}/console/")
    assert page.locator("h1").inner_text() == "Dashboard"


def test_viewer_of_one_town_never_sees_another_towns_messages(
    console_hub: ConsoleHub, new_page: Callable[[], Any]
) -> None:
    hub = console_hub.hub
    page = new_page()
    _log_in(page, hub.url, "kashima.view")
    page.goto(f"{hub.url}/console/messages")
    results = page.locator("#results").inner_text()
    assert console_hub.kashima_id in results and console_hub.dead_id not in results
    for tenant in (TAKEO, KASHIMA):
        answer = page.goto(f"{hub.url}/console/messages/{tenant}/{console_hub.dead_id}")
        assert answer is not None and answer.status == 404
    page.goto(f"{hub.url}/console/messages?tenant={TAKEO}")
    assert console_hub.dead_id not in page.content()
    page.goto(f"{hub.url}/console/dead-letters")
    assert console_hub.dead_id not in page.content()

    # a viewer reads masked only, and a POST without the form's CSRF token is refused
    page.goto(f"{hub.url}/console/messages/{KASHIMA}/{console_hub.kashima_id}")
    assert page.get_by_role("button", name="マスク解除して表示").count() == 0
    assert "RK-DOM004" in page.locator("#findings").inner_text()
    assert "4119607670" not in page.content()
    forged = page.request.post(
        f"{hub.url}/console/messages/{KASHIMA}/{console_hub.kashima_id}/unmask",
        form={"reason": "x"},
    )
    assert forged.status == 403 and "RK-CON001" in forged.text()


# --- over plain HTTP (no browser): cookies, headers, CSRF, the other pages and actions -------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@contextmanager
def _http_login(hub: HubServer, username: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client signed in as ``username`` and its session's CSRF token."""
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        page = client.get("/console/login")
        login_csrf = _CSRF.search(page.text)
        assert login_csrf is not None
        form = {"csrf": login_csrf[1], "username": username, "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303
        found = _CSRF.search(client.get("/console/").text)
        assert found is not None and found[1] != login_csrf[1]  # a fresh token after login
        yield client, found[1]


def _admin_chain(tmp: Path) -> list[tuple[str, str | None]]:
    store = open_store(Settings(data_dir=tmp / "hub-data"))
    try:
        with store.sessions() as session:
            rows = session.scalars(select(AuditRecord).where(AuditRecord.tenant == ADMIN_CHAIN))
            return [(row.event, row.actor) for row in rows]
    finally:
        store.close()


def test_session_cookie_is_signed_httponly_strict_and_pages_are_locked_down(
    console_hub: ConsoleHub,
) -> None:
    answer = httpx.get(f"{console_hub.hub.url}/console/login")
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    forged = httpx.get(
        f"{console_hub.hub.url}/console/", cookies={"renkei_console": "eyJ1IjoiaHViLnN0YWZmIn0"}
    )
    assert forged.status_code == 303 and "/console/login" in forged.headers["location"]
    assert httpx.get(f"{console_hub.hub.url}/healthz").status_code == 200  # no login needed


def test_pages_render_for_hub_staff_and_pause_resume_is_audited(
    console_hub: ConsoleHub,
) -> None:
    batch = f"{'b' * 32}-{KASHIMA}"
    work = Worklist(
        console_hub.tmp / "hub-data" / "imports" / f"{batch}.sqlite", "b" * 64, KASHIMA, "utf-8"
    )
    work.commit([], [ErrorRow(3, 90, "receiptNumber", "RK-IMP002", "受付番号", "bad")], 100, 4)
    work.close()
    with _http_login(console_hub.hub, "hub.staff") as (client, csrf):
        errors = client.get(f"/console/imports/{batch}/errors.csv")
        assert errors.status_code == 200 and "RK-IMP002" in errors.content.decode("utf-8-sig")
        assert client.get(f"/console/imports/{batch}/list.csv").status_code == 200
        for path, expected in (
            ("/console/configuration", "NhiEligibilityNotice"),
            ("/console/imports", batch),
            ("/console/health", "正常"),
            ("/console/destinations", "zeimu"),
            (f"/console/messages?tenant={KASHIMA}&date_from=令和8年1月1日", "kokuho"),
        ):
            page = client.get(path)
            assert page.status_code == 200 and expected in page.text, path
        by_subject = client.post(
            "/console/messages", data={"csrf": csrf, "subject": SUBJECT}, follow_redirects=True
        )
        results = by_subject.text.split('id="results"')[1]
        assert console_hub.dead_id in results and console_hub.kashima_id in results
        assert SUBJECT not in results and "*********7" in results  # shown masked
        refused = client.get("/console/messages?date_from=令和8年2月30日")
        assert refused.status_code == 400 and "RK-CON004" in refused.text
        no_reason = client.post("/console/destinations/zeimu/pause", data={"csrf": csrf})
        assert no_reason.status_code == 400 and "RK-CON002" in no_reason.text
        for action in ("pause", "resume"):
            form = {"csrf": csrf, "reason": "計画停止（テスト）"}
            assert (
                client.post(f"/console/destinations/zeimu/{action}", data=form).status_code == 303
            )
            shown = client.get("/console/destinations").text
            assert ("一時停止中" in shown) == (action == "pause")
        _hold(console_hub, "kokuho", "HTTP 429 Too Many Requests; Retry-After 300 s")
        shown = client.get("/console/destinations").text
        assert "送信を控え中（相手の Retry-After）" in shown and "Retry-After 300 s" in shown
        _hold(console_hub, "zeimu", "unreachable, held 600 s: connection: ConnectionRefusedError")
        shown = client.get("/console/destinations").text  # the circuit breaker's hold
        assert "送信を控え中（接続できない）" in shown and "held 600 s" in shown
    chain = _admin_chain(console_hub.tmp)
    assert ("destination.paused", "console:hub.staff") in chain
    assert ("destination.resumed", "console:hub.staff") in chain
    assert ("import.download", "console:hub.staff") in chain  # the 評価変更リスト, not errors
    assert [event for event, _ in chain].count("import.download") == 1


def _hold(console_hub: ConsoleHub, system: str, reason: str) -> None:
    """What dispatch writes when ``system`` answers with Retry-After: 300."""
    store = open_store(Settings(data_dir=console_hub.tmp / "hub-data"))
    try:
        until = datetime.now(UTC) + timedelta(seconds=300)
        with store.sessions.begin() as session:
            hold_destinations(session.connection(), {system: (until, reason)})
    finally:
        store.close()


def test_a_town_cannot_act_beyond_its_rights(console_hub: ConsoleHub) -> None:
    with _http_login(console_hub.hub, "kashima.view") as (viewer, csrf):
        form = {"csrf": csrf, "reason": "x", "action": "redeliver", "delivery": ["1", "2"]}
        assert viewer.post("/console/dead-letters", data=form).status_code == 404  # Takeo's
        unmask = f"/console/messages/{KASHIMA}/{console_hub.kashima_id}/unmask"
        forbidden = viewer.post(unmask, data={"csrf": csrf, "reason": "見たい"})
        assert forbidden.status_code == 403 and "RK-AUT011" in forbidden.text
        batch = f"{'c' * 32}-{KASHIMA}"
        work = Worklist(
            console_hub.tmp / "hub-data" / "imports" / f"{batch}.sqlite", "c" * 64, KASHIMA, "utf-8"
        )
        work.close()
        assert viewer.get(f"/console/imports/{batch}/errors.csv").status_code == 200
        assert viewer.get(f"/console/imports/{batch}/list.csv").status_code == 403  # names
    with _http_login(console_hub.hub, "takeo.ops") as (takeo, csrf):
        # zeimu serves every town: pausing it is not one town's operator's call
        paused = takeo.post("/console/destinations/zeimu/pause", data={"csrf": csrf, "reason": "x"})
        assert paused.status_code == 403
        kashima_batch = f"{'c' * 32}-{KASHIMA}"
        assert takeo.get(f"/console/imports/{kashima_batch}/errors.csv").status_code == 404
