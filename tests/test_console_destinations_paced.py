"""A paused destination resumed from the console at N a second, as ``renkei destinations
resume --per-second N`` does (the same function: bus/dispatch/operations.py ``resume`` with
``spacing=pace(N)``), against a real hub over HTTP: its waiting deliveries are due 1/N s
apart by id (the oldest first), the page says how many were given a time and how long they
take ("毎秒 N 件ずつ、約 M 分"), the audit record carries the pace; a pace that is no number
the CLI takes is RK-CON007 (the bulk dead-letter page's rule) and leaves it paused.

The deliveries are written straight into the Message Store's tables, leased to no running
worker, so the hub's workers leave them (and their due times) for the assertions."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import AuditRecord, Delivery, DestinationState
from tests.support.hub_server import HubServer, hub_server
from tests.test_console_dead_letters_all import _CSRF, PASSWORD, TAKEO, _dead_letters

pytestmark = pytest.mark.console

DESTINATION = "tainou"
WAITING = 700  # at 10 a second: 70 s, "約 1 分"
PER_SECOND = 10
LATER = datetime(2099, 1, 1, tzinfo=UTC)  # a retry's back-off, and a lease no worker holds


@dataclass(frozen=True, slots=True)
class Paused:
    server: HubServer
    data_dir: Path
    waiting: list[int]  # the oldest id first


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paused]:
    tmp = tmp_path_factory.mktemp("console-resume-paced")
    with hub_server(tmp) as server:
        data_dir = tmp / "hub-data"
        store = open_store(Settings(data_dir=data_dir))
        try:
            add_operator(store.sessions, "hub.ops", PASSWORD, Role.OPERATOR, frozenset({"*"}))
            waiting = _dead_letters(store, DESTINATION, [TAKEO], WAITING)
            with store.sessions.begin() as session:
                session.add(
                    DestinationState(
                        system=DESTINATION, paused=True, reason="障害", changed_at=datetime.now(UTC)
                    )
                )
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(waiting))
                    .values(
                        state="pending",
                        finished_at=None,
                        attempts=3,
                        next_attempt_at=LATER,
                        lease_owner="nobody",
                        lease_expires_at=LATER,
                    )
                )
        finally:
            store.close()
        yield Paused(server, data_dir, waiting)


def _post(paused: Paused, action: str, **fields: str) -> tuple[httpx.Response, httpx.Client]:
    client = httpx.Client(base_url=paused.server.url, timeout=30)
    login = _CSRF.search(client.get("/console/login").text)
    assert login is not None
    form = {"csrf": login[1], "username": "hub.ops", "password": PASSWORD, "next": ""}
    assert client.post("/console/login", data=form).status_code == 303
    page = _CSRF.search(client.get("/console/destinations").text)
    assert page is not None
    answer = client.post(
        f"/console/destinations/{DESTINATION}/{action}",
        data={"csrf": page[1], "reason": "滞納管理システム復旧確認済み"} | fields,
    )
    return answer, client


def _state(paused: Paused) -> tuple[bool, dict[int, datetime], list[AuditRecord]]:
    store = open_store(Settings(data_dir=paused.data_dir))
    try:
        with store.sessions() as session:
            state = session.get(DestinationState, DESTINATION)
            rows = session.execute(
                select(Delivery.id, Delivery.next_attempt_at).where(Delivery.id.in_(paused.waiting))
            )
            due = {d: at.replace(tzinfo=at.tzinfo or UTC) for d, at in rows}
            resumed = session.scalars(
                select(AuditRecord).where(AuditRecord.event == "destination.resumed")
            ).all()
            return bool(state and state.paused), due, list(resumed)
    finally:
        store.close()


@pytest.mark.parametrize("typed", ["fast", "0", "20000", "nan"])
def test_a_pace_that_cannot_be_read_is_refused_and_it_stays_paused(
    paused: Paused, typed: str
) -> None:
    answer, client = _post(paused, "resume", per_second=typed)
    client.close()
    assert answer.status_code == 400 and "RK-CON007" in answer.text
    assert "毎秒の件数" in answer.text and "0.01〜10000" in answer.text
    still_paused, due, resumed = _state(paused)
    assert still_paused and set(due.values()) == {LATER} and resumed == []


def test_the_resume_form_takes_a_pace(paused: Paused) -> None:
    with httpx.Client(base_url=paused.server.url, timeout=30) as client:
        login = _CSRF.search(client.get("/console/login").text)
        assert login is not None
        form = {"csrf": login[1], "username": "hub.ops", "password": PASSWORD, "next": ""}
        client.post("/console/login", data=form)
        page = client.get("/console/destinations").text
    resume = page.split(f'action="/console/destinations/{DESTINATION}/resume"')[1]
    assert 'name="per_second"' in resume.split("</form>")[0]


def test_a_paced_resume_spaces_the_waiting_due_times_by_id(paused: Paused) -> None:
    started = datetime.now(UTC)
    answer, client = _post(paused, "resume", per_second=str(PER_SECOND))
    try:
        assert answer.status_code == 303
        shown = client.get(answer.headers["location"]).text
    finally:
        client.close()
    assert f"待っている {WAITING:,} 件に" in shown
    assert f"毎秒 {PER_SECOND} 件ずつ、約 1 分かけて送る" in shown  # 700 ÷ 10 = 70 s
    still_paused, due, resumed = _state(paused)
    assert not still_paused
    times = [due[d] for d in paused.waiting]  # by id: the oldest first
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(seconds=1 / PER_SECOND)}
    assert abs(times[0] - started) < timedelta(seconds=30)
    assert [(r.actor, r.detail["per_second"], r.detail["due_now"]) for r in resumed] == [
        ("console:hub.ops", PER_SECOND, WAITING)
    ]
