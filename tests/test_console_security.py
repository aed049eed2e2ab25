"""The console attacked from outside, on a real ``renkei serve`` over PostgreSQL with accounts
made by ``renkei users add``: what an operator (or a crafted link) types cannot carry control
or text-direction characters into the store, the audit trail or the log, and every answer
under ``/console/`` — a path no route takes, too — carries the console's security headers."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bus.settings import Settings
from bus.store.db import create_store_engine
from tests.conftest import require_service
from tests.support.browser import chromium, log_in
from tests.support.hub_server import RENKEI, HubServer, hub_server
from tests.support.postgres import scratch_database

pytestmark = pytest.mark.console

PASSWORD = "correct horse battery"
SUBJECT = "4119607677"  # a 宛名番号: never in the hub's log
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class SecuredHub:
    server: HubServer
    log: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredHub]:
    require_service("postgresql")
    tmp = tmp_path_factory.mktemp("console-security")
    log = tmp / "hub.log"
    with (
        scratch_database("renkei_console_sec") as url,
        log.open("wb") as stderr,
        hub_server(
            tmp, env={"RENKEI_DATABASE_URL": url}, stderr=stderr, serve_options=()
        ) as server,
    ):
        environment = {
            **os.environ,
            "RENKEI_DATA_DIR": str(tmp / "hub-data"),
            "RENKEI_DATABASE_URL": url,
            "RENKEI_PASSWORD": PASSWORD,
        }
        command = [RENKEI, "users", "add", "hub.staff", "--role", "operator", "--tenant", "*"]
        subprocess.run(command, env=environment, check=True, capture_output=True)
        yield SecuredHub(server, log)


@dataclass(frozen=True, slots=True)
class Staff:
    """hub.staff signed in once for the module (logins are limited to 10 an account and
    minute)."""

    client: httpx.Client
    csrf: str


@pytest.fixture(scope="module")
def staff(secured: SecuredHub) -> Iterator[Staff]:
    with httpx.Client(base_url=secured.server.url, timeout=30) as client:
        token = _CSRF.search(client.get("/console/login").text)
        assert token is not None
        form = {"csrf": token[1], "username": "hub.staff", "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303
        page = _CSRF.search(client.get("/console/").text)
        assert page is not None
        yield Staff(client, page[1])


def _refused_as_unusable(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text[:200]
    assert "RK-CON010" in answer.text
    for name, value in HEADERS.items():
        assert answer.headers.get(name) == value, name


@pytest.mark.parametrize(
    "path",
    [
        "/console/messages?message_id=%00",
        "/console/messages?service=%00",
        "/console/messages?tenant=%00",
        "/console/messages/412066/%00",
        "/console/dead-letters?destination=%1B%5B2J",
    ],
)
def test_a_control_character_in_a_link_is_refused_before_the_store(staff: Staff, path: str) -> None:
    _refused_as_unusable(staff.client.get(path))


def test_a_searched_subject_with_a_nul_never_reaches_the_database_or_the_log(
    secured: SecuredHub, staff: Staff
) -> None:
    """PostgreSQL refuses a NUL in text: the search failed with a 500, and the traceback's
    SQL parameters wrote the 宛名番号 into the hub's log in clear."""
    answer = staff.client.post(
        "/console/messages",
        data={"csrf": staff.csrf, "subject": f"{SUBJECT}\x00"},
        follow_redirects=True,
    )
    _refused_as_unusable(answer)
    assert SUBJECT not in answer.text  # the refusal names the field, not what was typed
    log = secured.log.read_text(encoding="utf-8", errors="replace")
    assert SUBJECT not in log and "Traceback" not in log


@pytest.mark.parametrize(
    "reason",
    [
        "計画停止\x00",  # PostgreSQL: a 500 (text cannot hold NUL)
        "計画停止\x1b]0;dlq cleared\x07",  # a terminal escape into the audit trail
        "計画停止\u202e了完認確",  # right-to-left override: the audit shows other words
    ],
)
def test_a_reason_with_control_or_direction_characters_is_refused(
    staff: Staff, reason: str
) -> None:
    form = {"csrf": staff.csrf, "reason": reason}
    _refused_as_unusable(staff.client.post("/console/destinations/kokuho/pause", data=form))
    assert "一時停止中" not in staff.client.get("/console/destinations").text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/console/no-such-page", 404),
        ("GET", "/console/messages/412066", 404),
        ("PUT", "/console/logout", 405),
    ],
)
def test_a_path_no_console_route_takes_is_a_console_page_with_its_headers(
    secured: SecuredHub, method: str, path: str, status: int
) -> None:
    answer = httpx.request(method, f"{secured.server.url}{path}", timeout=30)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    for name, value in HEADERS.items():
        assert answer.headers.get(name) == value, name
    if status == 405:
        assert answer.headers["allow"] == "POST"


def _peak_memory_mib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert found is not None
    return int(found[1]) // 1024


def test_an_oversized_form_is_refused_without_being_held_in_memory(secured: SecuredHub) -> None:
    """Anyone (no login needed) could post a form of any size to /console/login: the hub read
    it whole into memory before refusing it, so a few parallel posts of a GiB exhausted the
    memory of the process that also carries the towns' messages."""
    pid = secured.server.process.pid
    before = _peak_memory_mib(pid)
    mebibyte = b"a" * (1 << 20)
    body = (mebibyte for _ in range(256))  # chunked: no declared length to refuse by
    form = {"content-type": "application/x-www-form-urlencoded"}
    try:
        streamed: httpx.Response | None = httpx.post(
            f"{secured.server.url}/console/login", content=body, headers=form, timeout=60
        )
    except httpx.TransportError:
        streamed = None  # refused mid-body: the hub closed the connection on the rest
    assert _peak_memory_mib(pid) - before < 64  # it held 256 MiB and more
    if streamed is not None:
        assert streamed.status_code == 413 and "RK-SEC002" in streamed.text
    declared = httpx.post(
        f"{secured.server.url}/console/login", content=b"a" * 100_000, headers=form, timeout=60
    )
    assert declared.status_code == 413 and "RK-SEC002" in declared.text


# --- in Chromium: text the hub did not write stays text ----------------------------------------

PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def test_hostile_text_in_reasons_and_links_never_runs_in_the_browser(
    secured: SecuredHub, staff: Staff
) -> None:
    """A pause reason (stored, shown to every operator) and query parameters echoed in forms
    and refusals: Jinja escapes them, and the CSP allows no inline script in any case. A
    regression guard: it passed before the fixes above."""
    pause = {"csrf": staff.csrf, "reason": PAYLOAD}
    assert staff.client.post("/console/destinations/houmu/pause", data=pause).status_code == 303
    try:
        with chromium() as browser:
            _visit_without_script(browser, secured.server.url)
    finally:
        resume = {"csrf": staff.csrf, "reason": "再開"}
        answer = staff.client.post("/console/destinations/houmu/resume", data=resume)
        assert answer.status_code == 303


def _visit_without_script(browser: Any, url: str) -> None:
    page = browser.new_context(locale="ja-JP").new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    log_in(page, url, "hub.staff", PASSWORD)
    hostile = quote(PAYLOAD)
    for path, shown in (
        ("/console/destinations", True),
        (f"/console/dead-letters?destination={hostile}", True),  # RK-CON007: its first 40
        (f"/console/messages?message_id={hostile}&service={hostile}", False),  # in the form
        (f"/console/messages/{hostile}/x", False),
    ):
        page.goto(f"{url}{path}")
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("img[src=x]").count() == 0, path
        if shown:
            assert PAYLOAD[:40] in page.locator("main").inner_text(), path  # as text
    assert dialogs == []


@pytest.mark.postgres
def test_a_failed_statement_never_carries_its_parameters_into_the_log(
    postgres_url: str, tmp_path: Path
) -> None:
    """Behind the refusal above, the store's own defence: an error from a statement (logged
    with its traceback when nothing catches it) names the SQL, never its parameters — here a
    searched 宛名番号, elsewhere a message body."""
    engine = create_store_engine(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
    try:
        with engine.connect() as connection, pytest.raises(DBAPIError) as failed:
            connection.execute(text("select :subject"), {"subject": f"{SUBJECT}\x00"})
    finally:
        engine.dispose()
    assert SUBJECT not in str(failed.value)
