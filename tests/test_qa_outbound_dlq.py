"""The Dead Letter Channel as an operator meets it: why each dead letter is dead, and what
`renkei dlq redeliver` says about an id it does not act on — against real destinations
(local servers that refuse, or nothing listening), a real store and the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from bus.config.models import RetryPolicy
from bus.dispatch.worker import Worker
from bus.settings import Settings
from bus.store.db import Store
from bus.store.models import Delivery, StoredMessage
from tests.support.receivers import free_port
from tests.test_dispatch import _cli, add_message, drain, hub_config, states, store  # noqa: F401


class Refusing(BaseHTTPRequestHandler):
    """Answers 404 until ``fixed``, then 200."""

    protocol_version = "HTTP/1.1"
    fixed = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200 if Refusing.fixed else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[str]:
    Refusing.fixed = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/zeimu"
    server.shutdown()
    server.server_close()


def test_dead_letters_say_why_and_redelivery_explains_what_it_skips(
    store: Store,  # noqa: F811
    store_settings: Settings,
    refusing: str,
) -> None:
    """`dlq list` showed "HTTP 404" and "ConnectionRefusedError" alike, with nothing to tell
    a refusal (fix the message) from a retry policy that ran out (fix the system); and
    `dlq redeliver` said only "not in the Dead Letter Channel" for an id that does not exist,
    one still being retried and one long delivered."""
    down = f"http://127.0.0.1:{free_port()}/kokuho"  # nothing listens there
    config = hub_config(
        {"zeimu": refusing, "kokuho": down, "juki": refusing},
        # an unreachable destination is held, its attempts uncounted (the circuit breaker):
        # only the age limit ends its delivery, at once here
        policy=RetryPolicy(max_attempts=1, max_age=timedelta(0)),
    )
    _, (refused, unreachable) = add_message(store.sessions, "A", ("zeimu", "kokuho"))
    worker = Worker(store.sessions, lambda: config, None, "qa:1", send_concurrency=1)
    try:
        drain(worker, lambda: set(states(store.sessions).values()) == {"dead"})
        listed = _cli(store_settings, "dlq", "list", "--json")
        assert listed.exit_code == 0, listed.output
        why = {d["id"]: (d["reason"], d["last_error"]) for d in json.loads(listed.stdout)}
        assert why == {
            refused: ("permanent", "HTTP 404 Not Found"),
            unreachable: ("age", "connection: ConnectionRefusedError"),
        }
        table = _cli(store_settings, "dlq", "list").stdout
        assert "why" in table and "permanent" in table and "age" in table

        Refusing.fixed = True
        delivered = add_message(store.sessions, "B", ("juki",))[1][0]
        drain(worker, lambda: states(store.sessions)[delivered] == "delivered")
        pending = add_message(store.sessions, "C", ("kokuho",))[1][0]
        redone = _cli(
            store_settings,
            "dlq",
            "redeliver",
            str(refused),
            "999999",
            str(delivered),
            str(pending),
            "--reason",
            "受信側修正済み",
        )
        assert redone.exit_code == 1
        assert redone.stdout == f"redelivered: {refused}\n"
        lines = redone.stderr.splitlines()
        assert "  配信 999999 はありません / there is no delivery 999999 (renkei dlq list)" in lines
        assert (
            f"  配信 {delivered} は配信済みです / delivery {delivered} is delivered; "
            f"再送 / to send it again: renkei messages replay {message_of(store, delivered)} "
            "--tenant 414247 --to juki --reason …"
        ) in lines
        assert (
            f"  配信 {pending} は配信待ち（再試行中を含む）です / delivery {pending} is pending"
        ) in lines
        assert sum("RK-STO006" in line for line in lines) == 3
        # the redelivered dead letter reaches the fixed system
        drain(worker, lambda: states(store.sessions)[refused] == "delivered")
    finally:
        worker.close()


def message_of(store: Store, delivery: int) -> str:  # noqa: F811
    with store.sessions() as session:
        return session.scalars(
            select(StoredMessage.message_id)
            .join(Delivery, Delivery.message_pk == StoredMessage.id)
            .where(Delivery.id == delivery)
        ).one()
