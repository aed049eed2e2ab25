"""After a long outage an operator redelivers (or discards, or lists) only the dead letters of
the outage's window: ``renkei dlq … --all --from … --to …`` by the time each one died, so
older dead letters (refused last month, still being looked into) are left alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bus.settings import Settings
from bus.store.admin_audit import admin_records
from bus.store.db import Store
from bus.store.models import Delivery
from tests.test_dispatch import _cli, states, store  # noqa: F401
from tests.test_dlq_all import _dead_letters


def _died(hub_store: Store, ids: list[int], at: datetime) -> None:
    with hub_store.sessions.begin() as session:
        for delivery in ids:
            session.get_one(Delivery, delivery).finished_at = at


def test_redeliver_all_only_those_dead_within_the_window(
    store: Store,  # noqa: F811
    store_settings: Settings,
) -> None:
    april = _dead_letters(store, "tainou", "permanent", 2)
    outage = _dead_letters(store, "tainou", "attempts", 3)
    after = _dead_letters(store, "tainou", "attempts", 1)
    _died(store, april, datetime(2026, 4, 20, 3, 0, tzinfo=UTC))
    _died(store, outage, datetime(2026, 5, 3, 3, 0, tzinfo=UTC))  # 5/3 12:00 JST
    _died(store, after, datetime(2026, 5, 8, 3, 0, tzinfo=UTC))

    listed = _cli(
        store_settings,
        "dlq",
        "list",
        "--json",
        "--from",
        "2026-05-01T18:00",
        "--to",
        "令和8年5月7日",
    )
    assert listed.exit_code == 0, listed.output
    assert {d["id"] for d in json.loads(listed.stdout)} == set(outage)

    redone = _cli(
        store_settings,
        "dlq",
        "redeliver",
        "--all",
        "--destination",
        "tainou",
        "--from",
        "2026-05-01T18:00",  # JST
        "--to",
        "令和8年5月7日",  # the whole day
        "--per-second",
        "50",
        "--reason",
        "滞納管理システム復旧後に再送",
    )
    assert redone.exit_code == 0, redone.output
    assert "redelivered: 3" in redone.stdout
    with store.sessions() as session:  # the admin record says which window, at what pace
        [record] = admin_records(session, action="dlq.redelivered")
    assert sorted(record.detail["deliveries"]) == sorted(outage)
    assert record.detail["dead_since"] == "2026-05-01T09:00:00+00:00"  # 18:00 JST
    assert record.detail["dead_by"] == "2026-05-07T14:59:59.999999+00:00"  # 5/7 JST, all of it
    assert record.detail["per_second"] == 50
    now = states(store.sessions)
    assert {now[d] for d in outage} == {"pending"}
    assert {now[d] for d in april + after} == {"dead"}

    gone = _cli(
        store_settings, "dlq", "discard", "--all", "--to", "2026-04-30", "--reason", "4月分"
    )
    assert gone.exit_code == 0, gone.output
    assert "discarded: 2" in gone.stdout
    assert {states(store.sessions)[d] for d in april} == {"discarded"}
    assert states(store.sessions)[after[0]] == "dead"


def test_a_window_is_a_filter_so_it_needs_all(
    store: Store,  # noqa: F811
    store_settings: Settings,
) -> None:
    dead = _dead_letters(store, "tainou", "attempts", 1)
    result = _cli(store_settings, "dlq", "redeliver", "--from", "2026-05-01", "--reason", "確認")
    assert result.exit_code == 2 and "RK-CON009" in result.output
    unreadable = _cli(
        store_settings, "dlq", "redeliver", "--all", "--from", "5月1日", "--reason", "確認"
    )
    assert unreadable.exit_code == 2 and "RK-CON004" in unreadable.output
    assert states(store.sessions)[dead[0]] == "dead"
