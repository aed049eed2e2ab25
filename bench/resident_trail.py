"""``renkei messages trail`` on a large Message Store: what one resident's trail costs.

    .venv/bin/python bench/resident_trail.py [--messages 100000] [--calls 20]

Fills a fresh SQLite store as bench/store_reads.py does (three deliveries a message), gives
every message a subject of its own (a 宛名番号 per message: the worst case for a look-up by
subject, no two messages share one), then times :func:`bus.store.trail.resident_trail` for
random residents (each call also appends its ``message.trail`` admin record) and prints
SQLite's plan of each statement it runs; then, in the same run, drops the two indexes of
migration 0011 (``ix_messages_subject``, ``ix_messages_relates_to``) and times the same
residents again: the baseline without them.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_reads import fill

from bus.store.db import Store, open_store
from bus.store.trail import resident_trail

_OWN_SUBJECTS = (
    "UPDATE messages SET subject = printf('%010d', id)",
    "UPDATE deliveries SET subject_key = printf('%010d', message_pk)",
)
_ONE_TENANT = (
    "UPDATE messages SET tenant = '412066'",
    "UPDATE deliveries SET tenant = '412066'",
)
#: the baseline: the store before migration 0011
_WITHOUT_INDEXES = (
    "DROP INDEX ix_messages_subject",
    "DROP INDEX ix_messages_relates_to",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument(
        "--one-tenant", action="store_true", help="Every message of one town (the worst case)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings, _ = fill(Path(directory), args.messages)
        store = open_store(settings)
        try:
            with store.sessions.begin() as session:
                one = _ONE_TENANT if args.one_tenant else ()
                for statement in _OWN_SUBJECTS + one:
                    session.execute(text(statement))
            with store.sessions() as session:
                picks = session.execute(text("SELECT tenant, subject FROM messages")).all()
                print(f"{len(picks)} messages, {_count(session, 'deliveries')} deliveries")
                tenants = session.execute(
                    text("SELECT count(*) FROM messages GROUP BY tenant ORDER BY 1 DESC")
                ).scalars()
                print(f"messages per tenant: {list(tenants)}")
            residents = random.Random(0).choices(picks, k=args.calls)
            plans: list[str] = ["plans with the indexes:"]
            indexed = _timed(store, residents, plans)
            with store.sessions.begin() as session:
                for statement in _WITHOUT_INDEXES:
                    session.execute(text(statement))
            without = _timed(store, residents, [])  # (a cached plan would show the old index)
            for name, times in (("with the indexes", indexed), ("without them", without)):
                print(f"trail {name}: median {_median(times):.1f} ms, max {max(times):.1f} ms")
            print(f"ratio (without / with, medians): {_median(without) / _median(indexed):.0f}x")
            print("\n".join(plans))
        finally:
            store.close()


def _timed(store: Store, residents: list[Any], plans: list[str]) -> list[float]:
    """Milliseconds of each resident's trail; the first call's plans appended to ``plans``."""
    times = []
    for call, (tenant, subject) in enumerate(residents):
        with store.sessions.begin() as session:
            if call == 0:
                _explain(session, plans)
            started = time.perf_counter()
            found = resident_trail(
                session, tenant=tenant, resident=subject, actor="bench", pseudonym_key=b"k"
            )
            times.append((time.perf_counter() - started) * 1000)
            if call == 0:
                event.remove(session.connection(), "before_cursor_execute", _hook)
        assert found.messages, subject
    return times


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def _count(session: object, table: str) -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # type: ignore[attr-defined]


_plans: list[str] = []


def _hook(conn: object, cursor: object, statement: str, parameters: object, *_: object) -> None:
    if statement.lstrip().upper().startswith(("SELECT", "WITH")):
        rows = cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()  # type: ignore[attr-defined]
        _plans.append(" ".join(statement.split())[:90])
        _plans.extend(f"    {row[-1]}" for row in rows)


def _explain(session: object, plans: list[str]) -> None:
    global _plans
    _plans = plans
    event.listen(session.connection(), "before_cursor_execute", _hook)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
