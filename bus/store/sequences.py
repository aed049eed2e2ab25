"""Per-subject sequence numbers: the order of deliveries per (tenant, destination, subject).

One upsert statement per allocation, ``INSERT … ON CONFLICT DO UPDATE … RETURNING``, raising
every key of a transaction (a whole group of ingests) at once: on PostgreSQL the conflicting
rows are locked until the transaction ends, so concurrent ingests of one subject queue on it
and each gets the next number; on SQLite the whole write transaction is serialised by
``BEGIN IMMEDIATE`` (see :mod:`bus.store.db`). Numbers are strictly increasing per key;
a rolled-back transaction gives its numbers back, so they are also gap-free in practice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bus.store.models import SubjectSequence

NO_SUBJECT = ""  # the ordering key of a message without a Header subject


def subject_key(subject: str | None) -> str:
    return subject or NO_SUBJECT


def upsert_insert(session: Session | Connection) -> Any:
    """The dialect's ``insert`` construct that knows ``ON CONFLICT`` (PostgreSQL or SQLite)."""
    dialect = (
        session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
    )
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"the Message Store supports PostgreSQL and SQLite, not {dialect}")


@dataclass(frozen=True, slots=True, order=True)
class SequenceKey:
    """What deliveries are ordered by: (tenant, destination, subject)."""

    tenant: str
    destination: str
    subject_key: str

    @classmethod
    def of(cls, tenant: str, destination: str, subject: str | None) -> SequenceKey:
        return cls(tenant, destination, subject_key(subject))


@cache
def _allocate(dialect_insert: Any) -> Any:
    """Raise one key's counter by ``:count``, returning the key and its new last number;
    built once per dialect with bind parameters so SQLAlchemy compiles it once, and executed
    with a list of keys ("insertmanyvalues": one multi-row statement per batch)."""
    table = SubjectSequence.__table__
    statement = dialect_insert(table).values(
        tenant=bindparam("tenant"),
        destination=bindparam("destination"),
        subject_key=bindparam("subject_key"),
        last_sequence=bindparam("count"),
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.tenant, table.c.destination, table.c.subject_key],
        set_={"last_sequence": table.c.last_sequence + statement.excluded.last_sequence},
    ).returning(table.c.tenant, table.c.destination, table.c.subject_key, table.c.last_sequence)


def next_sequences(session: Session, keys: Sequence[SequenceKey]) -> list[int]:
    """The next number for each key, handed out in ``keys`` order (a key may repeat). Each
    distinct key's row is raised once, in sorted key order (rows of one statement are
    written in order), so two transactions lock rows in the same order and never
    deadlock."""
    counts = Counter(keys)
    if not counts:
        return []
    ordered = sorted(counts)
    rows = session.connection().execute(
        _allocate(upsert_insert(session)),
        [
            {
                "tenant": key.tenant,
                "destination": key.destination,
                "subject_key": key.subject_key,
                "count": counts[key],
            }
            for key in ordered
        ],
    )
    following: dict[SequenceKey, int] = {}
    for tenant, destination, subject, last in rows:
        key = SequenceKey(tenant, destination, subject)
        following[key] = int(last) - counts[key] + 1
    numbers = []
    for key in keys:
        numbers.append(following[key])
        following[key] += 1
    return numbers


def next_sequence(session: Session, *, tenant: str, destination: str, subject: str | None) -> int:
    """Allocate the next sequence number for (tenant, destination, subject) in the session's
    transaction."""
    return next_sequences(session, [SequenceKey.of(tenant, destination, subject)])[0]
