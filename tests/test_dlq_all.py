"""``renkei dlq redeliver|discard --all``: after an outage an operator acts on every dead letter
of a destination (narrowed by tenant and why) in one command, page by page, each page in its
own transaction; ids and ``--all`` are one or the other (RK-CON009)."""

from __future__ import annotations

import pytest

from bus.settings import Settings
from bus.store.audit import append_audit
from bus.store.db import Store
from bus.store.models import Delivery
from tests.test_dispatch import TENANT, _cli, add_message, audit_events, states, store  # noqa: F401


def _dead_letters(hub_store: Store, destination: str, why: str, count: int) -> list[int]:
    """``count`` deliveries to ``destination`` dead-lettered as the worker does it: state dead
    and a ``dead`` audit record giving why."""
    ids = []
    for _ in range(count):
        message_id, (delivery,) = add_message(hub_store.sessions, "S", (destination,))
        with hub_store.sessions.begin() as session:
            row = session.get_one(Delivery, delivery)
            row.state, row.attempts, row.last_error = "dead", 3, "HTTP 503 Service Unavailable"
            append_audit(
                session,
                tenant=TENANT,
                event="dead",
                message_id=message_id,
                detail={"delivery": delivery, "destination": destination, "reason": why},
            )
        ids.append(delivery)
    return ids


def test_all_of_a_destination_for_one_reason_page_by_page(
    store: Store,  # noqa: F811
    store_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bus.cli.dispatch.ALL_PAGE", 2)  # several pages of the real loop
    outage = _dead_letters(store, "zeimu", "attempts", 5)
    refused = _dead_letters(store, "zeimu", "permanent", 2)
    elsewhere = _dead_letters(store, "juki", "attempts", 3)
    redone = _cli(
        store_settings,
        "dlq",
        "redeliver",
        "--all",
        "--destination",
        "zeimu",
        "--why",
        "attempts",
        "--reason",
        "税務システム復旧後に再送",
    )
    assert redone.exit_code == 0, redone.output
    assert "redelivered: 5" in redone.stdout and "5 件を再送しました" in redone.stdout
    now = states(store.sessions)
    assert {now[d] for d in outage} == {"pending"}
    assert {now[d] for d in refused + elsewhere} == {"dead"}
    assert [e for e, _ in audit_events(store.sessions)].count("redelivered") == 5

    gone = _cli(store_settings, "dlq", "discard", "--all", "--reason", "重複のため破棄")
    assert gone.exit_code == 0, gone.output
    assert "discarded: 5" in gone.stdout
    now = states(store.sessions)
    assert {now[d] for d in refused + elsewhere} == {"discarded"}
    assert {now[d] for d in outage} == {"pending"}  # not dead any more: untouched


def test_all_within_one_tenant_only(
    store: Store,  # noqa: F811
    store_settings: Settings,
) -> None:
    dead = _dead_letters(store, "zeimu", "age", 2)
    other = _cli(
        store_settings, "dlq", "redeliver", "--all", "--tenant", "011002", "--reason", "別団体"
    )
    assert other.exit_code == 0 and "redelivered: 0" in other.stdout
    assert {states(store.sessions)[d] for d in dead} == {"dead"}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("1", "--all"), "ids and --all"),
        (("1", "--destination", "zeimu"), "ids with filters"),
        (("--destination", "zeimu"), "filters without --all"),
        ((), "neither ids nor --all"),
    ],
)
def test_ids_and_all_are_one_or_the_other(
    store: Store,  # noqa: F811
    store_settings: Settings,
    args: tuple[str, ...],
    said: str,
) -> None:
    dead = _dead_letters(store, "zeimu", "attempts", 1)
    for command in ("redeliver", "discard"):
        result = _cli(store_settings, "dlq", command, *args, "--reason", "確認")
        assert result.exit_code == 2, result.output
        assert "RK-CON009" in result.output and said in result.output
    assert states(store.sessions)[dead[0]] == "dead"
