"""Console sessions on a shared town-hall terminal, on a real ``renkei serve`` (SQLite) with
its own operator accounts: a session left unused is refused after the idle
timeout (here ``RENKEI_CONSOLE_IDLE_SECONDS=2``) and the operator reads why on the login
page, while an operator at work stays signed in; the absolute 8 hours still hold; a password
changed on a host whose clock is off neither locks new logins out nor leaves old sessions
open; and every console cookie is ``Secure`` behind a TLS-terminating proxy."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.console.session import COOKIE, LANG_COOKIE, serializer
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.browser import chromium, log_in
from tests.support.hub_server import RENKEI, HubServer, hub_server
from tests.test_clock_jumps import faketime_env

pytestmark = pytest.mark.console

PASSWORD = "correct horse battery"
IDLE_SECONDS = 2
IDLE_NOTICE = "一定時間操作がなかったため、ログアウトしました。"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
USERS = ("idle.op", "busy.op", "browser.op", "longday.op", "ahead.op", "behind.op")


@dataclass(frozen=True, slots=True)
class Terminal:
    server: HubServer
    data_dir: Path


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    tmp = tmp_path_factory.mktemp("console-sessions")
    env = {"RENKEI_CONSOLE_IDLE_SECONDS": str(IDLE_SECONDS)}
    with hub_server(tmp, env=env, serve_options=()) as server:
        store = open_store(Settings(data_dir=tmp / "hub-data"))
        try:  # in this process: a `renkei users add` each took seconds
            for user in USERS:
                add_operator(store.sessions, user, PASSWORD, Role.OPERATOR, frozenset({"*"}))
        finally:
            store.close()
        yield Terminal(server, tmp / "hub-data")


def _users(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
    environment = {**(env or os.environ), "RENKEI_DATA_DIR": str(data_dir)}
    environment["RENKEI_PASSWORD"] = PASSWORD
    subprocess.run([RENKEI, "users", *args], env=environment, check=True, capture_output=True)


def _log_in(client: httpx.Client, username: str) -> None:
    token = _CSRF.search(client.get("/console/login").text)
    assert token is not None
    form = {"csrf": token[1], "username": username, "password": PASSWORD, "next": ""}
    answer = client.post("/console/login", data=form)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"


def _sent_to_login(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/console/login")


def test_an_idle_session_is_refused_and_the_login_page_says_why(terminal: Terminal) -> None:
    with httpx.Client(base_url=terminal.server.url, timeout=30) as client:
        _log_in(client, "idle.op")
        assert client.get("/console/").status_code == 200
        kept = client.cookies[COOKIE]
        time.sleep(IDLE_SECONDS + 0.5)  # the operator walked away
        answer = client.get("/console/messages")
        assert _sent_to_login(answer)
        login = client.get(answer.headers["location"])
        assert login.status_code == 200 and IDLE_NOTICE in login.text
        assert IDLE_NOTICE not in client.get("/console/login").text  # said once
    with httpx.Client(base_url=terminal.server.url, cookies={COOKIE: kept}) as replay:
        assert _sent_to_login(replay.get("/console/"))  # a copy of the cookie is no better


def test_an_operator_at_work_stays_signed_in(terminal: Terminal) -> None:
    with httpx.Client(base_url=terminal.server.url, timeout=30) as client:
        _log_in(client, "busy.op")
        started = time.monotonic()
        while time.monotonic() - started < IDLE_SECONDS * 2:
            assert client.get("/console/").status_code == 200
            time.sleep(IDLE_SECONDS / 4)


def test_an_idle_browser_shows_the_login_page_with_the_notice(terminal: Terminal) -> None:
    with chromium() as browser:
        page = browser.new_page()
        log_in(page, terminal.server.url, "browser.op", PASSWORD)
        page.wait_for_timeout((IDLE_SECONDS + 0.5) * 1000)  # no request meanwhile
        page.get_by_role("link", name="メッセージ検索").first.click()
        page.wait_for_url(re.compile(r"/console/login\?next="))
        assert IDLE_NOTICE in page.get_by_role("status").inner_text()


def test_a_session_in_use_still_ends_eight_hours_after_login(terminal: Terminal) -> None:
    """The cookie is signed afresh as the operator works; its login time still counts."""
    with httpx.Client(base_url=terminal.server.url, timeout=30) as client:
        _log_in(client, "longday.op")
        assert client.get("/console/").status_code == 200
        signer = serializer(Settings(data_dir=terminal.data_dir))
        data = signer.loads(client.cookies[COOKIE])
        data["t"] -= 8 * 3600 + 1  # logged in a working day ago, active a moment ago
        old = signer.dumps(data)
    with httpx.Client(base_url=terminal.server.url, cookies={COOKIE: old}) as client:
        answer = client.get("/console/")
        assert _sent_to_login(answer)
        assert "ログインから 8 時間が経過したため" in client.get(answer.headers["location"]).text


def test_a_password_changed_on_a_host_whose_clock_is_ahead_does_not_lock_logins_out(
    terminal: Terminal,
) -> None:
    """`renkei users passwd` on an administration host 3 minutes ahead: logging in with the
    new password on the hub works at once (it was refused for 3 minutes)."""
    _users(terminal.data_dir, "passwd", "ahead.op", env=faketime_env("+3m"))
    with httpx.Client(base_url=terminal.server.url, timeout=30) as client:
        _log_in(client, "ahead.op")
        assert client.get("/console/").status_code == 200


def test_a_password_changed_on_a_host_whose_clock_is_behind_ends_open_sessions(
    terminal: Terminal,
) -> None:
    """A host 3 minutes behind: the sessions opened before still end (they stayed open)."""
    with httpx.Client(base_url=terminal.server.url, timeout=30) as client:
        _log_in(client, "behind.op")
        assert client.get("/console/").status_code == 200
        _users(terminal.data_dir, "passwd", "behind.op", env=faketime_env("-3m"))
        assert _sent_to_login(client.get("/console/"))


def _flags(answer: httpx.Response, name: str) -> set[str]:
    """The attributes of the cookie ``name`` that ``answer`` sets (lower case)."""
    (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    return {part.strip().lower() for part in cookie.split(";")[1:]}


def test_every_console_cookie_is_secure_behind_a_tls_proxy(terminal: Terminal) -> None:
    """uvicorn trusts ``X-Forwarded-Proto`` from a proxy on 127.0.0.1: the session and the
    language cookies are then both Secure, HttpOnly and SameSite=Strict (the language one
    was not Secure)."""
    https = {"X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=terminal.server.url, timeout=30, headers=https) as client:
        session = _flags(client.get("/console/login"), COOKIE)
        lang = _flags(client.get("/console/lang?to=en"), LANG_COOKIE)
    for flags in (session, lang):
        assert {"secure", "httponly", "samesite=strict"} <= flags
    with httpx.Client(base_url=terminal.server.url, timeout=30) as client:  # plain HTTP
        assert "secure" not in _flags(client.get("/console/lang?to=en"), LANG_COOKIE)
