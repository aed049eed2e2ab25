"""Reads and purges on a large Message Store (issue 4: message status; retention): do they cost
time in proportion to the message, or to the store?

    .venv/bin/python bench/store_reads.py [--messages 160000]

Fills a fresh embedded store (SQLite) with ``--messages`` messages of
three deliveries each — a few thousand stored as the Store stage stores them, the rest copied
from those by SQL (the CPU seconds of the copies: what the store's indexes cost to write) — then
times, each per call, in wall and in CPU milliseconds (the machine is shared):

* **find** (the baseline): :func:`find_message`, the unique-key look-up every read starts with;
* **status**: :func:`show_message` — what ``GET /api/v1/messages/{id}`` and the console's
  message page read (the message, its deliveries, its audit records);
* **list dead**: :func:`list_messages` filtered on a delivery state (the console's filter);
* **purge**: :func:`purge` of expired, delivered messages (their deliveries and keys too).

Run it with ``PYTHONPATH`` pointing at another tree to compare (the bench file stays this one).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hub_fixtures as fx

from bus.settings import Settings
from bus.store.db import open_store
from bus.store.queries import MessageStatus, find_message, list_messages, show_message
from bus.store.retention import purge

SEED_MESSAGES = 5_000
_COPY_MESSAGES = """
INSERT INTO messages (message_id, tenant, system, service, kind, subject, correlation_id,
    relates_to, body, body_digest, received_at, expires_at)
SELECT 'c' || :generation || '-' || id, tenant, system, service, kind, subject, correlation_id,
    relates_to, body, body_digest, received_at, expires_at
FROM messages WHERE id <= :last ORDER BY id
"""
_COPY_DELIVERIES = """
INSERT INTO deliveries (message_pk, destination, tenant, subject_key, sequence, state,
    attempts, next_attempt_at, created_at)
SELECT copy.id, d.destination, d.tenant, d.subject_key, d.sequence + :offset,
    d.state, d.attempts, d.next_attempt_at, d.created_at
FROM deliveries d
JOIN messages m ON m.id = d.message_pk
JOIN messages copy ON copy.tenant = m.tenant AND copy.system = m.system
    AND copy.message_id = 'c' || :generation || '-' || m.id
WHERE m.id <= :last
"""


def fill(directory: Path, messages: int) -> tuple[Settings, float]:
    """The filled store's settings and the CPU seconds of the copies."""
    settings = Settings(data_dir=directory)
    store = open_store(settings)
    try:
        fx.prefill(store.sessions, fx.corpus(SEED_MESSAGES, distinct=SEED_MESSAGES))
        cpu = time.process_time()
        with store.sessions.begin() as session:
            # every message delivered (what a purge may take), then copies up to ``messages``
            session.execute(text("UPDATE deliveries SET state = 'delivered'"))
            count, generation = SEED_MESSAGES, 0
            while count < messages:
                generation += 1
                first = session.execute(text("SELECT min(id) FROM messages")).scalar_one()
                take = min(count, messages - count)
                offset = session.execute(text("SELECT max(sequence) FROM deliveries")).scalar_one()
                values = {"generation": generation, "last": first + take - 1, "offset": offset}
                session.execute(text(_COPY_MESSAGES), values)
                session.execute(text(_COPY_DELIVERIES), values)
                count += take
            # a second apart, newest last (the console lists the newest first)
            session.execute(
                text(
                    "UPDATE messages SET received_at = strftime('%Y-%m-%d %H:%M:%S', "
                    "received_at, '-' || (:count - id) || ' seconds') || '.000000'"
                ),
                {"count": count},
            )
            # one dead delivery in fifty, for the console's filter
            session.execute(text("UPDATE deliveries SET state = 'dead' WHERE id % 50 = 0"))
    finally:
        store.close()
    return settings, time.process_time() - cpu


def per_call(action: Callable[[], object], calls: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per call."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        action()
    return (
        (time.perf_counter() - started) * 1000 / calls,
        (time.process_time() - cpu) * 1000 / calls,
    )


def measure(settings: Settings, calls: int, purged: int) -> dict[str, tuple[float, float]]:
    store = open_store(settings)
    rng = random.Random(0)
    try:
        with store.sessions() as session:
            rows = session.execute(text("SELECT message_id, tenant FROM messages")).all()
            picks = iter([rng.choice(rows) for _ in range(2 * calls)])
            figures = {
                "find": per_call(lambda: find_message(session, *next(picks)), calls),
                "status": per_call(lambda: show_message(session, *next(picks)), calls),
                "list dead": per_call(
                    lambda: list_messages(session, status=MessageStatus.DEAD, limit=20), 3
                ),
            }
        with store.sessions.begin() as session:
            session.execute(
                text("UPDATE messages SET expires_at = :past WHERE id <= :last"),
                {"past": datetime.now(UTC) - timedelta(days=1), "last": purged},
            )
        report = None

        def run() -> None:
            nonlocal report
            report = purge(store.sessions)

        wall, cpu = per_call(run, 1)
        assert report is not None and report.messages > 0
        figures["purge"] = (wall / report.messages, cpu / report.messages)
    finally:
        store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=160_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--purge", type=int, default=500, help="messages expired and purged")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        settings, copies_cpu = fill(Path(scratch), args.messages)
        figures = measure(settings, args.calls, args.purge)
    print(
        f"SQLite messages={args.messages:,} deliveries={3 * args.messages:,} "
        f"load={os.getloadavg()[0]:.2f} copies CPU {copies_cpu:.2f} s  "
        + "  ".join(f"{name}={ms:.3f}/{cpu:.3f}" for name, (ms, cpu) in figures.items())
        + "  (wall/CPU ms per call; purge: per purged message)"
    )


if __name__ == "__main__":
    main()
