"""The Idempotent Receiver's reads for a group of ingests, one statement per group (per 256
keys): which keys are stored already, and for the duplicates the acknowledgement first given.

On SQLite, keys are selected by an OR of equalities on the key's columns (a row-value ``IN``
list makes SQLite scan the table), through the DBAPI cursor (it is the first statement of
every transaction, a group of one included); the key list is padded to a power of two
(repeating its last key), so the driver sees a handful of distinct statements whatever sizes
the groups take under load. PostgreSQL plans that OR as a scan of the whole table (150–200 ms
for 256 keys in a 30,000-key store, growing with it): there the keys are one statement that
joins the table to the three columns ``unnest``-ed from arrays (~6–15 ms for 1,000 keys in
the same store, by the primary key or a hash join as the planner judges).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Row, Table, bindparam, select

from bus.pipeline import Acknowledgement
from bus.store.audit import utc
from bus.store.bulk import query
from bus.store.models import AuditRecord, IdempotencyKey

Key = tuple[str, str, str]  # tenant, sending system, messageId
KEYS_PER_SELECT = 256  # SQLite refuses an expression deeper than 1,000 (a batch import's 1,000)

_KEYS = cast(Table, IdempotencyKey.__table__)
_RECORDS = cast(Table, AuditRecord.__table__)


@cache
def _select_keys(count: int) -> str:
    """The stored keys among ``count`` (tenant, system, messageId) triples."""
    match = "(tenant = ? AND system = ? AND message_id = ?)"
    return (
        "SELECT tenant, system, message_id, content_digest, created_at FROM idempotency_keys"
        f" WHERE {' OR '.join([match] * count)}"
    )


_SELECT_KEYS_FROM_ARRAYS = (
    "SELECT k.tenant, k.system, k.message_id, k.content_digest, k.created_at"
    " FROM idempotency_keys AS k JOIN unnest(?::varchar[], ?::varchar[], ?::varchar[])"
    " AS w(tenant, system, message_id)"
    " ON k.tenant = w.tenant AND k.system = w.system AND k.message_id = w.message_id"
)


# by messageId alone (its index): with the tenant in the condition SQLite picks the
# (tenant, seq) index and walks the tenant's whole chain; the rest is matched here
_SELECT_STORED = select(
    *(_RECORDS.c[name] for name in ("tenant", "actor", "message_id", "seq", "at", "detail"))
).where(_RECORDS.c.event == "stored", _RECORDS.c.message_id.in_(bindparam("ids", expanding=True)))


class StoredKey(NamedTuple):
    content_digest: str
    created_at: datetime


def existing_keys(connection: Connection, keys: Iterable[Key]) -> dict[Key, StoredKey]:
    """The stored keys among ``keys`` (read through the DBAPI cursor: the statement is the
    group's first and runs per transaction)."""
    dialect = connection.dialect
    created_at = _KEYS.c.created_at.type.dialect_impl(dialect).result_processor(dialect, None)
    every = sorted(set(keys))
    found: dict[Key, StoredKey] = {}
    for tenant, system, message_id, digest, created in _stored_rows(connection, every):
        moment = cast(datetime, created if created_at is None else created_at(created))
        found[(tenant, system, message_id)] = StoredKey(digest, utc(moment))
    return found


def _stored_rows(connection: Connection, keys: list[Key]) -> list[Any]:
    if not keys:
        return []
    if connection.dialect.name == "postgresql":
        columns = [list(column) for column in zip(*keys, strict=True)]
        return query(connection, _SELECT_KEYS_FROM_ARRAYS, columns)
    rows: list[Any] = []
    for start in range(0, len(keys), KEYS_PER_SELECT):
        chunk = keys[start : start + KEYS_PER_SELECT]
        chunk += chunk[-1:] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
        parameters = [value for key in chunk for value in key]
        rows += query(connection, _select_keys(len(chunk)), parameters)
    return rows


def original_acks(
    connection: Connection, created: dict[Key, datetime]
) -> dict[Key, Acknowledgement]:
    """The acknowledgement first given for each stored key (``created``: when it was stored),
    as its first ``stored`` audit record kept it (it outlives a purge of the message)."""
    ids = sorted({message_id for _, _, message_id in created})
    firsts: dict[Key, Row[Any]] = {}
    for start in range(0, len(ids), KEYS_PER_SELECT):
        chunk = ids[start : start + KEYS_PER_SELECT]
        for row in connection.execute(_SELECT_STORED, {"ids": chunk}):
            key = (row.tenant, row.actor, row.message_id)
            if key in created and (key not in firsts or row.seq < firsts[key].seq):
                firsts[key] = row
    acks = {}
    for key, moment in created.items():
        record = firsts.get(key)
        if record is None:  # not expected: the record is written with the key
            acks[key] = Acknowledgement(key[2], moment, (), duplicate=True)
            continue
        destinations = tuple(str(d) for d in record.detail.get("destinations", ()))
        acks[key] = Acknowledgement(key[2], utc(record.at), destinations, duplicate=True)
    return acks
