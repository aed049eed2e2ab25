"""A destination that accepts connections but answers after many seconds (a vendor's
overloaded 国保 system at month-end) must not hold the others' deliveries: a round no
longer waits for its slow sends (they are carried over, their leases kept, and recorded by
a later round), and such a destination never takes more than half a worker's send lanes.
Real recording receivers on 127.0.0.1 (one answering late, one at once), routed from the
same store. docs/dispatch.md (応答の遅い配信先)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bus.dispatch.worker import WorkerPool
from bus.store.db import Store
from bus.store.models import Delivery
from tests.support.receivers import Receiver, wait_for
from tests.test_dispatch import add_message, hub_config, receivers, states, store  # noqa: F401


def _latencies(
    hub_store: Store, count: int, gap: float, destinations: tuple[str, ...]
) -> list[float]:
    """Add ``count`` messages ``gap`` s apart, each routed to ``destinations`` (the fast one
    first); the seconds until each one's first delivery was recorded as delivered."""
    added: dict[int, float] = {}
    arrived: dict[int, float] = {}
    adding = threading.Event()

    def watch() -> None:
        while adding.is_set() is False or len(arrived) < len(added):
            now = time.monotonic()
            current = states(hub_store.sessions)
            for delivery, at in list(added.items()):
                if delivery not in arrived and current.get(delivery) == "delivered":
                    arrived[delivery] = now - at
            time.sleep(0.01)
            assert now - min(added.values(), default=now) < 150, "not delivered"

    watcher = threading.Thread(target=watch)
    watcher.start()
    for index in range(count):
        _message, ids = add_message(hub_store.sessions, f"S{index}", destinations)
        added[ids[0]] = time.monotonic()
        time.sleep(gap)
    adding.set()
    watcher.join()
    return sorted(arrived.values())


def test_a_slow_destination_does_not_hold_a_fast_one(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """Every message goes to both; kokuho answers after 1 s. Two workers, their rounds
    carried over after 0.1 s: juki's deliveries are recorded within a fraction of a second
    (they waited for kokuho's answer, a round at a time: at least 1 s each). Nothing is
    sent twice although kokuho's sends outlive the 0.6 s lease."""
    kokuho = receivers("kokuho").start("--delay", "1")
    juki = receivers("juki").start()
    config = hub_config({"juki": juki.url, "kokuho": kokuho.url})
    with WorkerPool(
        2,
        store.sessions,
        lambda: config,
        None,
        lease_seconds=0.6,
        poll_seconds=0.05,
        carry_seconds=0.1,
    ):
        seconds = _latencies(store, 5, 0.05, ("juki", "kokuho"))
        wait_for(lambda: set(states(store.sessions).values()) == {"delivered"}, timeout=20)
    assert seconds[-1] < 0.6, seconds
    for receiver in (juki, kokuho):
        received = [record["messageId"] for record in receiver.records()]
        assert len(received) == len(set(received)) == 5  # each once


def test_a_slow_destination_s_backlog_does_not_fill_every_batch(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """80 deliveries to kokuho (answering after 0.6 s) due before juki's: they come first
    in every claim, but a worker whose kokuho sends are carried over claims none of them
    until one ends, so juki's arrive at once (they waited for the backlog: ~3 s)."""
    kokuho = receivers("kokuho").start("--delay", "0.6")
    juki = receivers("juki").start()
    config = hub_config({"juki": juki.url, "kokuho": kokuho.url})
    for index in range(80):
        add_message(store.sessions, f"K{index}", ("kokuho",))
    with WorkerPool(2, store.sessions, lambda: config, None, poll_seconds=0.05, carry_seconds=0.1):
        time.sleep(0.2)
        seconds = _latencies(store, 4, 0.05, ("juki",))
    assert seconds[-1] < 0.5, seconds


@pytest.mark.slow
def test_measured_fast_destination_behind_an_8_second_one(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """The defaults (two workers, 8 lanes, 50 per round, a 30 s lease, carried over after
    1 s); 20 messages 0.5 s apart to both, kokuho answering after 8 s. juki's deliveries
    waited a median 18.8 s, at most 23.3 s, behind kokuho's; now at most ~1.5 s."""
    kokuho = receivers("kokuho").start("--delay", "8")
    juki = receivers("juki").start()
    config = hub_config({"juki": juki.url, "kokuho": kokuho.url}, timeout=60)
    with WorkerPool(2, store.sessions, lambda: config, None, poll_seconds=0.2):
        seconds = _latencies(store, 20, 0.5, ("juki", "kokuho"))
    assert seconds[len(seconds) // 2] < 2.5 and seconds[-1] < 3.0, seconds


@pytest.mark.slow
def test_measured_fast_destination_behind_an_8_second_one_s_backlog(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """The defaults; 200 deliveries to kokuho (answering after 8 s) due first, then 10 to
    juki 0.5 s apart: juki's waited for the whole backlog, 108–112 s; now under a second."""
    kokuho = receivers("kokuho").start("--delay", "8")
    juki = receivers("juki").start()
    config = hub_config({"juki": juki.url, "kokuho": kokuho.url}, timeout=60)
    for index in range(200):
        add_message(store.sessions, f"K{index}", ("kokuho",))
    with WorkerPool(2, store.sessions, lambda: config, None, poll_seconds=0.2):
        time.sleep(0.5)
        seconds = _latencies(store, 10, 0.5, ("juki",))
    assert seconds[-1] < 3.0, seconds


def test_stopping_gives_up_on_a_send_that_takes_too_long(
    store: Store,  # noqa: F811
    receivers: Callable[[str], Receiver],  # noqa: F811
) -> None:
    """kokuho answers after 30 s (its timeout 60 s). Stopping waits its ``timeout`` (here
    0.3 s), then ends the send and releases the delivery unattempted, so a restart sends it
    at once (it waited for the whole answer — up to the endpoint's timeout, 300 s at most —
    then its outcome was lost and the delivery sent again after the lease)."""
    kokuho = receivers("kokuho").start("--delay", "30")
    config = hub_config({"kokuho": kokuho.url}, timeout=60)
    _message, (delivery,) = add_message(store.sessions, "K", ("kokuho",))
    pool = WorkerPool(1, store.sessions, lambda: config, None, poll_seconds=0.05)
    pool.start()
    wait_for(lambda: _row(store, delivery)[1] is not None, timeout=5)
    time.sleep(0.2)  # the request is on its way
    started = time.monotonic()
    pool.stop(timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert _row(store, delivery) == ("pending", None, 0)


def _row(hub_store: Store, delivery: int) -> tuple[str, str | None, int]:
    with hub_store.sessions() as session:
        row = session.get_one(Delivery, delivery)
        return row.state, row.lease_owner, row.attempts
