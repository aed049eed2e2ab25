"""Console logins on the admin chain, for the information-security officer: a real hub
(SQLite) driven over HTTP records who logged in or out, when, from which address and with
what outcome — never the password, nor a typed name that is no account; an idle session's
end is recorded once however often its cookie comes back; and a login flood writes a bounded
number of records (per address by the login throttle, hub-wide by ``FAILURES_RECORDED``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from adapters.console.auth import FAILED_LOGINS_PER_ADDRESS
from adapters.console.session import COOKIE, serializer
from bus.cli import app
from bus.config.models import RateLimit
from bus.security import login_audit
from bus.security.operators import Role, add_operator
from bus.security.rate_limit import RateLimiter
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.db import open_store
from bus.store.models import AuditRecord, RateWindow
from tests.support.hub_server import HubServer, hub_server

pytestmark = pytest.mark.console

PASSWORD = "correct horse battery"
IDLE_SECONDS = 60
USERS = ("audit.op", "wrong.op", "idle.op")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True, slots=True)
class Hub:
    server: HubServer
    settings: Settings


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("login-audit")
    env = {"RENKEI_CONSOLE_IDLE_SECONDS": str(IDLE_SECONDS)}
    with hub_server(tmp, env=env, serve_options=()) as server:
        settings = Settings(data_dir=tmp / "hub-data")
        store = open_store(settings)
        try:
            for user in USERS:
                add_operator(store.sessions, user, PASSWORD, Role.OPERATOR, frozenset({"*"}))
        finally:
            store.close()
        yield Hub(server, settings)


def _post_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    token = _CSRF.search(client.get("/console/login").text)
    assert token is not None
    form = {"csrf": token[1], "username": username, "password": password, "next": ""}
    return client.post("/console/login", data=form)


def _records(settings: Settings) -> list[dict[str, Any]]:
    """The admin chain's console records, oldest first."""
    store = open_store(settings)
    try:
        with store.sessions() as session:
            rows = session.scalars(
                select(AuditRecord)
                .where(AuditRecord.tenant == ADMIN_CHAIN, AuditRecord.event.like("console.%"))
                .order_by(AuditRecord.seq)
            )
            return [{"event": r.event, "actor": r.actor, "at": r.at, **r.detail} for r in rows]
    finally:
        store.close()


def _every_admin_row(settings: Settings) -> str:
    store = open_store(settings)
    try:
        with store.sessions() as session:
            rows = session.scalars(select(AuditRecord).where(AuditRecord.tenant == ADMIN_CHAIN))
            return json.dumps([[r.event, r.actor, r.detail] for r in rows], ensure_ascii=False)
    finally:
        store.close()


def test_a_login_and_its_logout_are_recorded_with_address_and_no_password(hub: Hub) -> None:
    with httpx.Client(base_url=hub.server.url, timeout=30) as client:
        assert _post_login(client, "audit.op", PASSWORD).status_code == 303
        token = _CSRF.search(client.get("/console/").text)
        assert token is not None
        assert client.post("/console/logout", data={"csrf": token[1]}).status_code == 303
    mine = [r for r in _records(hub.settings) if r.get("user") == "audit.op"]
    assert [r["event"] for r in mine] == [login_audit.LOGIN, login_audit.LOGOUT]
    login, logout = mine
    assert login["actor"] == logout["actor"] == "console:audit.op"
    assert login["from"] == logout["from"] == "127.0.0.1"
    assert login["session"] == logout["session"] and len(login["session"]) == 16
    assert login["at"] <= logout["at"]
    assert PASSWORD not in _every_admin_row(hub.settings)


def test_a_failed_login_is_recorded_never_the_password_nor_a_name_of_no_account(
    hub: Hub,
) -> None:
    mistyped = "Secret-Typed-In-The-Username-Field"  # no account: it may be a password
    with httpx.Client(base_url=hub.server.url, timeout=30) as client:
        assert _post_login(client, "wrong.op", "not the password 1").status_code == 401
        assert _post_login(client, mistyped, PASSWORD).status_code == 401
    failed = [r for r in _records(hub.settings) if r["event"] == login_audit.LOGIN_FAILED]
    assert {"user": "wrong.op", "from": "127.0.0.1", "reason": "credentials"}.items() <= failed[
        -2
    ].items()
    assert failed[-1]["user"] is None and failed[-1]["from"] == "127.0.0.1"
    assert failed[-1]["actor"] is None
    every = _every_admin_row(hub.settings)
    assert mistyped not in every and PASSWORD not in every and "not the password" not in every


def test_an_idle_session_ends_on_the_record_once_however_often_its_cookie_returns(
    hub: Hub,
) -> None:
    with httpx.Client(base_url=hub.server.url, timeout=30) as client:
        assert _post_login(client, "idle.op", PASSWORD).status_code == 303
        assert client.get("/console/").status_code == 200
        signer = serializer(hub.settings)
        data = signer.loads(client.cookies[COOKIE])
        data["t"] -= IDLE_SECONDS + 5  # the operator walked away a minute ago
        data["a"] -= IDLE_SECONDS + 5
        kept = signer.dumps(data)
        client.cookies.set(COOKIE, kept)
        assert client.get("/console/").status_code == 303  # to the login page
    for _ in range(3):  # a copy of the cookie, replayed
        with httpx.Client(base_url=hub.server.url, cookies={COOKIE: kept}) as replay:
            assert replay.get("/console/").status_code == 303
    mine = [r for r in _records(hub.settings) if r.get("user") == "idle.op"]
    assert [(r["event"], r.get("why")) for r in mine] == [
        (login_audit.LOGIN, None),
        (login_audit.SESSION_END, "idle"),
    ]
    assert mine[0]["session"] == mine[1]["session"]


def test_renkei_audit_admin_lists_the_console_records(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the officer reads them: ``renkei audit admin --action console`` (and --json)."""
    monkeypatch.setenv("RENKEI_DATA_DIR", str(hub.settings.data_dir))
    monkeypatch.delenv("RENKEI_DATABASE_URL", raising=False)
    with httpx.Client(base_url=hub.server.url, timeout=30) as client:
        assert _post_login(client, "audit.op", PASSWORD).status_code == 303
    runner = CliRunner()
    listed = runner.invoke(app, ["audit", "admin", "--action", "console", "--limit", "5"])
    assert listed.exit_code == 0, listed.output
    last = listed.output.strip().splitlines()[-1]
    assert "console.login  console:audit.op" in last and '"from": "127.0.0.1"' in last
    as_json = runner.invoke(app, ["audit", "admin", "--action", "user", "--json"])
    assert as_json.exit_code == 0, as_json.output
    records = json.loads(as_json.output)["records"]
    assert {r["action"] for r in records} == {"user.add"}
    assert [r["detail"]["user"] for r in records] == list(USERS)


def _in_one_minute(margin: float) -> None:
    """Start at a point of the minute leaving ``margin`` seconds (the windows are minutes)."""
    if time.time() % 60 > 60 - margin:
        time.sleep(60.2 - time.time() % 60)


@pytest.mark.slow
def test_a_login_flood_from_one_address_writes_a_bounded_number_of_records(hub: Hub) -> None:
    """Last in this module: it leaves 127.0.0.1 throttled for the rest of the minute. Slow
    (each failed login checks a password hash); light sibling: the one below."""
    allowed = FAILED_LOGINS_PER_ADDRESS.per_minute
    assert allowed is not None
    _in_one_minute(15)
    before = len(_records(hub.settings))
    statuses = []
    with httpx.Client(base_url=hub.server.url, timeout=30) as client:
        for n in range(allowed + 10):
            statuses.append(_post_login(client, f"flood{n}", "Summer2026!").status_code)
    assert statuses.count(429) >= 10  # the throttle took over
    flood = _records(hub.settings)[before:]
    events = [r["event"] for r in flood]
    assert events.count(login_audit.LOGIN_FAILED) == statuses.count(401) <= allowed
    assert events.count(login_audit.LOGIN_THROTTLED) == 1  # once for the minute, not per 429
    assert all(r["user"] is None for r in flood)  # none of these names is an account


def test_a_throttled_address_is_recorded_once_a_minute(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        _in_one_minute(5)
        recorded = [
            login_audit.record_failure(store.sessions, "nobody", "192.0.2.7", code="RK-CON008")
            for _ in range(5)
        ]
        assert login_audit.record_failure(store.sessions, "x", "192.0.2.8", code="RK-CON008")
    finally:
        store.close()
    assert recorded == [True, False, False, False, False]


def test_failed_logins_from_many_addresses_are_capped_hub_wide(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    cap = login_audit.FAILURES_RECORDED.per_minute
    assert cap is not None
    try:
        _in_one_minute(10)
        recorded = [
            login_audit.record_failure(
                store.sessions, "nobody", f"192.0.2.{n}", reason=login_audit.CREDENTIALS
            )
            for n in range(cap + 10)
        ]
        with store.sessions() as session:
            events = list(
                session.scalars(select(AuditRecord.event).where(AuditRecord.tenant == ADMIN_CHAIN))
            )
    finally:
        store.close()
    assert recorded.count(True) == cap
    assert events.count(login_audit.LOGIN_FAILED) == cap
    assert events.count(login_audit.LOGIN_CAPPED) == 1


def test_old_rate_windows_are_deleted_though_each_login_makes_its_own_limiter(
    tmp_path: Path,
) -> None:
    """The console makes a limiter per login: the windows of a flood must still go."""
    store = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        with store.sessions.begin() as session:
            session.add(RateWindow(system="login:old", unit="m", window_start=0, count=5))
        for n in range(300):
            RateLimiter(store.sessions).admit(f"login:{n}", RateLimit(per_minute=10), now=1e6)
        with store.sessions() as session:
            assert session.get(RateWindow, ("login:old", "m", 0)) is None
    finally:
        store.close()
