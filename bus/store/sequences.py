"""Per-subject sequence numbers: the order of deliveries per (tenant, destination, subject).

One upsert statement per allocation, ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (a
multi-row insert through the DBAPI cursor, :mod:`bus.store.bulk`), raising
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
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bus.store.bulk import BulkInsert
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


_FIELDS = attrgetter("tenant", "destination", "subject_key")
_ALLOCATE = BulkInsert(
    cast(Table, SubjectSequence.__table__),
    ("tenant", "destination", "subject_key", "last_sequence"),
    conflict="ON CONFLICT (tenant, destination, subject_key) DO UPDATE SET"
    " last_sequence = subject_sequences.last_sequence + excluded.last_sequence",
    returning=("tenant", "destination", "subject_key", "last_sequence"),
)


def allocate_sequences(connection: Connection, keys: Sequence[SequenceKey]) -> list[int]:
    """The next number for each key, handed out in ``keys`` order (a key may repeat). Each
    distinct key's counter is raised once by its count (inserted at the count when new), in
    sorted key order (the rows of a multi-row insert are written in order), so two
    transactions lock rows in the same order and never deadlock."""
    # as plain tuples: hashed, compared and sorted in C (the dataclass's own methods are
    # Python functions, a sizeable share of a large group's cost); the order is the same
    fields = [_FIELDS(key) for key in keys]
    counts = Counter(fields)
    if not counts:
        return []
    rows = _ALLOCATE.execute(connection, [(*key, counts[key]) for key in sorted(counts)])
    following: dict[tuple[str, str, str], int] = {}
    for tenant, destination, subject, last in rows:
        key = (tenant, destination, subject)
        following[key] = int(last) - counts[key] + 1
    numbers = []
    for key in fields:
        numbers.append(following[key])
        following[key] += 1
    return numbers


def next_sequences(session: Session, keys: Sequence[SequenceKey]) -> list[int]:
    """:func:`allocate_sequences` in the session's transaction."""
    return allocate_sequences(session.connection(), keys)


def next_sequence(session: Session, *, tenant: str, destination: str, subject: str | None) -> int:
    """Allocate the next sequence number for (tenant, destination, subject) in the session's
    transaction."""
    return next_sequences(session, [SequenceKey.of(tenant, destination, subject)])[0]
