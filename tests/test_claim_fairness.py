"""A backlog made due at once (a week of one destination's dead letters redelivered, its
pending ones resumed) does not hold back every other destination's new messages: a claim
takes most of its batch oldest due first and, when those fill it, a share from the newest
due. A subject's order is kept either way. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bus.dispatch.claims import FRESH_SHARE, claim_jobs
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery
from tests.test_dispatch import add_message

LIMIT = 8  # a batch: 6 oldest due first, then 2 newest due first
LEASE = timedelta(seconds=30)
OUTAGE = datetime.now(UTC) - timedelta(days=7)


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def _backlog(store: Store, count: int) -> list[int]:
    """``count`` deliveries to tainou, one per resident, due since the outage."""
    return [
        add_message(store.sessions, f"R{n}", ("tainou",), now=OUTAGE + timedelta(seconds=n))[1][0]
        for n in range(count)
    ]


def _claim(store: Store) -> list[int]:
    with store.sessions.begin() as session:
        jobs = claim_jobs(session, "w", datetime.now(UTC), LEASE, LIMIT)
    return [job.delivery_id for job in jobs]


def test_a_new_message_of_another_destination_is_claimed_beside_a_backlog(store: Store) -> None:
    backlog = _backlog(store, 20)
    _, (fresh,) = add_message(store.sessions, "NEW", ("zeimu",))
    claimed = _claim(store)
    assert len(claimed) == LIMIT
    assert fresh in claimed  # before: the 8 oldest of the backlog, zeimu behind all 20
    oldest = LIMIT - LIMIT // FRESH_SHARE
    assert set(backlog[:oldest]) <= set(claimed)  # the backlog's head still goes first


def test_without_a_backlog_one_claim_takes_everything_due_in_order(store: Store) -> None:
    due = _backlog(store, 3)
    _, (fresh,) = add_message(store.sessions, "NEW", ("zeimu",))
    assert _claim(store) == [*due, fresh]


def test_the_newest_share_never_takes_a_residents_later_delivery_first(store: Store) -> None:
    backlog = _backlog(store, 20)
    _, (second,) = add_message(store.sessions, "R19", ("tainou",), now=OUTAGE)
    _, (third,) = add_message(store.sessions, "R19", ("tainou",))  # the newest due of all
    round_of: dict[int, int] = {}
    for turn in range(10):  # drain, each round's claims delivered before the next
        claimed = _claim(store)
        if not claimed:
            break
        round_of.update(dict.fromkeys(claimed, turn))
        with store.sessions.begin() as session:
            for delivery_id in claimed:
                session.get_one(Delivery, delivery_id).state = "delivered"
    assert len(round_of) == 22  # everything, once
    assert round_of[backlog[19]] < round_of[second] < round_of[third]
