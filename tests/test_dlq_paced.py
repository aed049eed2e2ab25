"""After a week-long outage, the backlog of one destination is sent paced (``--per-second``)
rather than made due all at once: the destination is not flooded, and other destinations'
new messages are claimed among it instead of queued behind all of it (claims go in due
order: a backlog due at once used to hold every other destination for the whole drain —
bench/outage_recovery.py, 58,000 to 滞納管理: a new 税務 message waited 32 s median, 67 s at
most)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bus.dispatch import operations
from bus.dispatch.claims import claim
from bus.settings import Settings
from bus.store.clock import database_now
from bus.store.db import Store
from bus.store.models import Delivery
from tests.test_dispatch import _cli, add_message, states, store  # noqa: F401

BACKLOG = 20


def _backlog(hub_store: Store, *, dead: bool) -> list[int]:
    """``BACKLOG`` deliveries to tainou, one per resident, received during the outage; dead
    (by attempts) or still pending."""
    week_ago = datetime.now(UTC) - timedelta(days=7)
    ids = []
    for n in range(BACKLOG):
        at = week_ago + timedelta(minutes=n)
        ids += add_message(hub_store.sessions, f"R{n}", ("tainou",), now=at)[1]
    if dead:
        with hub_store.sessions.begin() as session:
            for delivery in ids:
                row = session.get_one(Delivery, delivery)
                row.state, row.attempts, row.finished_at = "dead", 12, week_ago
    return ids


def _first_round(hub_store: Store) -> tuple[list[str], dict[int, datetime]]:
    """A new 税務 message arrives; what the next round of 5 claims, and the due times."""
    add_message(hub_store.sessions, "NEW", ("zeimu",))
    with hub_store.sessions.begin() as session:
        now = database_now(session.connection())
        claimed = claim(session, "w1", now, timedelta(seconds=30), 5)
        destinations = [d.destination for d in claimed]
        due = dict(session.execute(select(Delivery.id, Delivery.next_attempt_at)).all())
    return destinations, due


def test_paced_redelivery_spreads_the_backlog_and_lets_others_through(
    store: Store,  # noqa: F811
    store_settings: Settings,
) -> None:
    backlog = _backlog(store, dead=True)
    started = datetime.now(UTC)
    redone = _cli(
        store_settings,
        "dlq",
        "redeliver",
        "--all",
        "--destination",
        "tainou",
        "--to",  # the outage's window ended 3 days ago: the pace still starts now
        (started - timedelta(days=3)).isoformat(),
        "--per-second",
        "10",
        "--reason",
        "滞納管理システム復旧後に再送",
    )
    assert redone.exit_code == 0, redone.output
    assert f"redelivered: {BACKLOG}" in redone.stdout
    assert "毎秒 10 件ずつ、約 2 秒かけて送ります" in redone.output
    claimed, due = _first_round(store)
    assert "zeimu" in claimed  # not behind the 20 redelivered
    times = [due[d] for d in backlog]
    gaps = {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(times)}
    assert gaps == {0.1}  # the oldest first, 10 a second
    assert times[0].replace(tzinfo=UTC) > started - timedelta(seconds=5)
    assert {states(store.sessions)[d] for d in backlog} == {"pending"}


def test_paced_resume_spreads_what_waited(store: Store) -> None:  # noqa: F811
    backlog = _backlog(store, dead=False)
    with store.sessions.begin() as session:
        operations.pause(session, "tainou", reason="障害", actor="ops")
    with store.sessions.begin() as session:
        due_now = operations.resume(
            session, "tainou", actor="ops", spacing=timedelta(milliseconds=250)
        )
    assert due_now == BACKLOG
    claimed, due = _first_round(store)
    assert "zeimu" in claimed
    times = [due[d] for d in backlog]
    assert times == sorted(times)
    assert round((times[-1] - times[0]).total_seconds(), 3) == 0.25 * (BACKLOG - 1)


def test_unpaced_still_due_at_once(store: Store) -> None:  # noqa: F811
    """Without --per-second every waiting delivery is due now; the claim's newest-due share
    (bus/dispatch/claims.py) still takes the new 税務 message beside the backlog."""
    backlog = _backlog(store, dead=False)
    with store.sessions.begin() as session:
        now = database_now(session.connection())
        operations.resume(session, "tainou", actor="ops", now=now)
    claimed, due = _first_round(store)
    assert max(due[d] for d in backlog).replace(tzinfo=UTC) <= now
    assert sorted(claimed) == ["tainou"] * 4 + ["zeimu"]  # not behind the whole backlog


def test_destinations_list_gives_the_age_of_the_dead_backlog(
    store: Store,  # noqa: F811
    store_settings: Settings,
) -> None:
    """The dead letters are the backlog's oldest part after an outage: ``oldest dead``
    (``oldest waiting`` counts pending deliveries only)."""
    _backlog(store, dead=True)
    listed = _cli(store_settings, "destinations", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (tainou,) = [d for d in json.loads(listed.stdout) if d["destination"] == "tainou"]
    assert tainou["dead"] == BACKLOG and tainou["oldest_waiting"] is None
    age = datetime.now(UTC) - datetime.fromisoformat(tainou["oldest_dead"])
    assert timedelta(days=6, hours=23) < age < timedelta(days=7, minutes=1)
    table = _cli(store_settings, "destinations", "list")
    assert "oldest dead" in table.stdout and "7日0時間前" in table.stdout


def test_a_resume_without_a_pace_keeps_a_paced_redeliverys_times(
    store: Store,  # noqa: F811
) -> None:
    """The runbook's order: redeliver paced while paused, then resume. A resume without
    --per-second used to make every waiting delivery due now, the paced ones too; it still
    makes a retry backing off due now."""
    backlog = _backlog(store, dead=True)
    retrying = add_message(store.sessions, "RETRY", ("tainou",))[1][0]
    with store.sessions.begin() as session:
        operations.pause(session, "tainou", reason="障害", actor="ops")
        row = session.get_one(Delivery, retrying)
        row.attempts, row.next_attempt_at = 3, datetime.now(UTC) + timedelta(hours=1)
    with store.sessions.begin() as session:
        now = database_now(session.connection())
        operations.redeliver(
            session, backlog, reason="復旧後", actor="ops", spacing=timedelta(seconds=10)
        )
    with store.sessions.begin() as session:
        paced = dict(session.execute(select(Delivery.id, Delivery.next_attempt_at)).all())
        due_now = operations.resume(session, "tainou", actor="ops", now=now)
    assert due_now == 1  # the retry
    with store.sessions() as session:
        after = dict(session.execute(select(Delivery.id, Delivery.next_attempt_at)).all())
    assert [after[d] for d in backlog] == [paced[d] for d in backlog]  # the pace kept
    last = after[backlog[-1]].replace(tzinfo=UTC)
    assert last - now > timedelta(seconds=10 * (BACKLOG - 2))
    assert after[retrying].replace(tzinfo=UTC) <= now
