"""Five years of a six-town hub's audit trail, for `renkei audit verify` at scale.

    RENKEI_DATA_DIR=/tmp/a5 .venv/bin/python bench/audit_five_years.py 1000000 \
        --key /tmp/a5/audit.pem --anchor /tmp/a5/anchor     # after `renkei audit keygen`

Written with the project's own append (``bus.store.audit.append_audits_on``), one
transaction per simulated business hour (weekdays, 9 hours, 2021-12 to 2026-11): each
message is ``stored`` + two ``delivered`` on its town's chain; one in a hundred is followed by a
``message.trail`` look-up on the admin chain. After each hour every moved chain gets a signed
checkpoint (``bus.store.checkpoints.sign``) in the database and its anchor file (the document
``write_anchor`` writes, without its fsync: 10⁵ files). RENKEI_DATABASE_URL for PostgreSQL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from bus.settings import Settings
from bus.store.audit import AuditEntry, append_audits_on
from bus.store.checkpoints import (
    anchor_document,
    anchor_path,
    load_signing_key,
    write_checkpoints,
)
from bus.store.db import open_store
from bus.store.trail import resident_key

TOWNS = ("011002", "012025", "013021", "014010", "015024", "016012")
START = datetime(2021, 12, 1, tzinfo=UTC)


def hours() -> list[datetime]:
    days = (START + timedelta(days=d) for d in range(5 * 365))
    return [day + timedelta(hours=h) for day in days if day.weekday() < 5 for h in range(9)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("records", type=int)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--anchor", type=Path, required=True)
    args = parser.parse_args()
    key = load_signing_key(args.key)
    pseudonyms = b"k" * 32  # a stand-in: these look-ups are volume, not a real resident's
    store = open_store(Settings())
    moments = hours()
    per_hour = args.records / len(moments)
    rng = random.Random(5)
    started, written, message = time.monotonic(), 0, 0
    for index, hour in enumerate(moments):
        count = int(per_hour * (index + 1)) - int(per_hour * index)
        entries: list[AuditEntry] = []
        at = hour
        while len(entries) < count:
            town = rng.choice(TOWNS)
            message += 1
            mid = f"{message:08d}-0000-4000-8000-{message:012d}"
            at += timedelta(seconds=rng.randint(1, 10))
            detail = {
                "service": "JuminIdoTsuchi",
                "kind": "notification",
                "digest": hashlib.sha256(mid.encode()).hexdigest(),
                "destinations": ["kokuho", "zeimu"],
                "system": "jumin",
            }
            entries.append(AuditEntry(town, "stored", mid, detail, "jumin", at))
            for n, destination in enumerate(("kokuho", "zeimu"), 1):
                sent = {"delivery": message * 2 + n, "destination": destination, "attempts": 1}
                later = at + timedelta(milliseconds=300 * n)
                entries.append(AuditEntry(town, "delivered", mid, sent, "dispatch-1", later))
            if rng.random() < 0.01:
                resident = f"{rng.randint(1, 5000):010d}"
                looked = {
                    "tenant": town,
                    "resident": "*********" + resident[-1],
                    "resident_key": resident_key(town, resident, pseudonyms),
                    "messages": 3,
                }
                actor = f"console:op{rng.randint(1, 9)}"
                entries.append(AuditEntry("admin", "message.trail", None, looked, actor, at))
        entries.sort(key=lambda e: e.at or at)
        with store.engine.begin() as connection:
            append_audits_on(connection, entries)
            checkpoint(Session(bind=connection), key, at, args.anchor)
        written += len(entries)
        if index % 1000 == 0:
            print(f"{written:,} records, {hour:%Y-%m-%d}, {time.monotonic() - started:.0f} s")
    print(f"{written:,} records in {time.monotonic() - started:.0f} s")


def checkpoint(session: Session, key: object, at: datetime, anchor: Path) -> None:
    """The hub's own checkpoint a minute after ``at``, and its anchor file (not synced: a
    bench's scratch anchor; ``write_anchor`` syncs each of ~70,000 files)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert isinstance(key, Ed25519PrivateKey)
    for row in write_checkpoints(session, key, now=at + timedelta(minutes=1)):
        path = anchor_path(anchor, row.chain, row.seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(json.dumps(anchor_document(row), sort_keys=True).encode("ascii") + b"\n")


if __name__ == "__main__":
    main()
