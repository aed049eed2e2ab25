"""The Monday after a week-long outage, in the console, for an operator who does not use the
command line: every dead letter of one destination that died within the outage's days is
redelivered at N a second, as ``renkei dlq redeliver --all --from/--to --per-second N`` does
(the same functions: bus/dispatch/operations.py ``paced_due``), against a real hub over HTTP:

- the confirmation page takes the window (和暦 or 西暦 days, JST, the whole of the last day)
  and the pace, counts only those dead in the window, and says the pace and how long it
  takes ("毎秒 10 件ずつ、約 4 分");
- the redelivered letters are due 1/N s apart, the oldest first, continuing from one request
  of the paged work to the next; those dead outside the window stay dead;
- a day that cannot be read is RK-CON004, a first day after the last RK-CON006, a pace that
  is no number the CLI takes RK-CON007 — on the confirmation page and when posted.

The letters are written straight into the Message Store's tables; the destination is paused,
so what is redelivered stays pending (with its due time) for the assertions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy import insert, select

from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import AuditRecord, Delivery, DestinationState
from bus.wareki import JST
from tests.support.hub_server import HubServer, hub_server
from tests.test_console_dead_letters_all import (
    _CSRF,
    PASSWORD,
    TAKEO,
    _act_on_all,
    _confirmation,
    _dead_letters,
)

pytestmark = pytest.mark.console

DESTINATION = "tainou"
# the outage: 令和7年5月3日 to 5月4日 (JST), the whole of both days
FIRST, LAST = datetime(2025, 5, 3, tzinfo=JST), datetime(2025, 5, 4, 23, 59, 59, tzinfo=JST)
WINDOW = "dead_from=令和7年5月3日&dead_to=2025-05-04"
IN_WINDOW = 2100  # more than one request of the work (2,000 a request at most)
PER_SECOND = 10


@dataclass(frozen=True, slots=True)
class Outage:
    server: HubServer
    data_dir: Path
    inside: list[int]  # dead within the window, the oldest id first
    outside: list[int]  # dead just before it, just after it, and in April


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    tmp = tmp_path_factory.mktemp("console-dead-paced")
    with hub_server(tmp) as server:
        data_dir = tmp / "hub-data"
        store = open_store(Settings(data_dir=data_dir))
        try:
            add_operator(store.sessions, "hub.ops", PASSWORD, Role.OPERATOR, frozenset({"*"}))
            with store.sessions.begin() as session:
                session.execute(
                    insert(DestinationState),
                    [
                        {
                            "system": DESTINATION,
                            "paused": True,
                            "reason": "test",
                            "changed_at": FIRST,
                        }
                    ],
                )
            before = _dead_letters(
                store, DESTINATION, [TAKEO], 2, finished_at=datetime(2025, 4, 10)
            )
            edge_before = _dead_letters(
                store, DESTINATION, [TAKEO], 1, finished_at=FIRST - timedelta(seconds=1)
            )
            inside = _dead_letters(store, DESTINATION, [TAKEO], 1, finished_at=FIRST)
            inside += _dead_letters(
                store, DESTINATION, [TAKEO], IN_WINDOW - 2, finished_at=FIRST + timedelta(hours=9)
            )
            inside += _dead_letters(store, DESTINATION, [TAKEO], 1, finished_at=LAST)
            edge_after = _dead_letters(
                store, DESTINATION, [TAKEO], 1, finished_at=LAST + timedelta(seconds=1)
            )
        finally:
            store.close()
        yield Outage(server, data_dir, inside, before + edge_before + edge_after)


@contextmanager
def _signed_in(outage: Outage) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=outage.server.url, timeout=60) as client:
        login = _CSRF.search(client.get("/console/login").text)
        assert login is not None
        form = {"csrf": login[1], "username": "hub.ops", "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303
        yield client


def _rows(outage: Outage, ids: list[int]) -> dict[int, tuple[str, datetime]]:
    """Each delivery's state and due time (UTC)."""
    store = open_store(Settings(data_dir=outage.data_dir))
    try:
        with store.sessions() as session:
            rows = session.execute(
                select(Delivery.id, Delivery.state, Delivery.next_attempt_at).where(
                    Delivery.id.in_(ids)
                )
            )
            return {d: (state, due.replace(tzinfo=due.tzinfo or UTC)) for d, state, due in rows}
    finally:
        store.close()


def test_the_confirmation_takes_a_window_and_a_pace_and_says_how_long(outage: Outage) -> None:
    query = f"destination={DESTINATION}&{WINDOW}&per_second={PER_SECOND}"
    with _signed_in(outage) as client:
        page = client.get(f"/console/dead-letters/all?{query}").text
        everything = client.get(f"/console/dead-letters/all?destination={DESTINATION}").text
        form = _confirmation(client, query)
    assert f'<td id="all-total" class="num">{IN_WINDOW:,}</td>' in page  # not the 4 outside
    assert f'<td id="all-total" class="num">{IN_WINDOW + 4:,}</td>' in everything
    assert "令和7年5月3日 〜 2025-05-04" in page
    assert "毎秒 10 件ずつ、約 4 分かけて送ります" in page  # 2,100 at 10 a second: 210 s
    assert "すべてが今すぐ配信予定になります" in everything  # no pace: said so
    # the posted form carries the window and the pace as typed (the server reads them again)
    assert form["dead_from"] == "令和7年5月3日" and form["dead_to"] == "2025-05-04"
    assert form["per_second"] == "10"


def test_a_paced_redelivery_spaces_due_times_and_keeps_to_the_window(outage: Outage) -> None:
    query = f"destination={DESTINATION}&{WINDOW}&per_second={PER_SECOND}"
    with _signed_in(outage) as client:
        form = _confirmation(client, query)
        form |= {"action": "redeliver", "reason": "滞納管理システム復旧後に再送", "confirm": "yes"}
        started = datetime.now(UTC)
        ended, steps = _act_on_all(client, form)
    assert steps >= 2  # the due times run on from one request to the next
    assert "n=2100" in ended
    rows = _rows(outage, outage.inside + outage.outside)
    assert {rows[d][0] for d in outage.outside} == {"dead"}  # outside the window: left alone
    assert {rows[d][0] for d in outage.inside} == {"pending"}
    due = [rows[d][1] for d in outage.inside]  # by id: the oldest first
    assert {b - a for a, b in itertools.pairwise(due)} == {timedelta(seconds=0.1)}
    assert abs(due[0] - started) < timedelta(seconds=30)  # from when the work started
    assert due[-1] - due[0] == timedelta(seconds=(IN_WINDOW - 1) / PER_SECOND)
    store = open_store(Settings(data_dir=outage.data_dir))
    try:
        with store.sessions() as session:
            admin = session.scalars(
                select(AuditRecord).where(AuditRecord.event == "dlq.redelivered")
            ).all()
    finally:
        store.close()
    assert sum(len(record.detail["deliveries"]) for record in admin) == IN_WINDOW
    assert {record.actor for record in admin} == {"console:hub.ops"}


@pytest.mark.parametrize(
    ("typed", "code", "field"),
    [
        ("dead_from=令和7年13月1日", "RK-CON004", "dead_from"),
        ("dead_to=yesterday", "RK-CON004", "dead_to"),
        ("dead_from=2025-05-04&dead_to=令和7年5月3日", "RK-CON006", "dead_from"),
        ("per_second=fast", "RK-CON007", "per_second"),
        ("per_second=0", "RK-CON007", "per_second"),
        ("per_second=20000", "RK-CON007", "per_second"),
    ],
)
def test_a_window_or_pace_that_cannot_be_read_is_refused(
    outage: Outage, typed: str, code: str, field: str
) -> None:
    with _signed_in(outage) as client:
        page = client.get(f"/console/dead-letters/all?destination={DESTINATION}&{typed}")
        form = _confirmation(client, f"destination={DESTINATION}")
        posted = client.post(
            "/console/dead-letters/all",
            data=form
            | {"action": "discard", "reason": "x", "confirm": "yes"}
            | dict(parse_qsl(typed)),
        )
    assert page.status_code == 400 and code in page.text
    assert f'name="{field}"' in page.text and 'aria-invalid="true"' in page.text
    assert 'id="act-on-all"' not in page.text  # nothing to act on until it is corrected
    assert posted.status_code == 400 and code in posted.text  # the form altered: refused too
    assert {state for state, _ in _rows(outage, outage.outside).values()} == {"dead"}
