"""One SQLite writer at a time per process, queued on a Python lock.

SQLite allows one write transaction at a time (the engine opens each with ``BEGIN
IMMEDIATE``). Threads of one process that collide there wait in SQLite's busy handler, which
polls with growing sleeps (1, 2, 5, 10 … ms): under load the lock sits idle while every
waiter sleeps, and a hub that ingests and dispatches at once loses most of its throughput to
those sleeps. The hot paths (grouped ingest commits, dispatch rounds) therefore queue on a
lock per engine first, which hands the turn over as soon as the previous transaction ends;
the busy timeout still arbitrates between processes (``renkei`` CLI commands). PostgreSQL
needs none of this: its row locks are fine-grained.

The turn is re-entrant: the Store stage's group commit takes it before choosing its group
(:mod:`bus.store.group_commit`) and then opens the transaction inside it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

_LOCKS: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()
_GUARD = threading.Lock()


def _engine(sessions: sessionmaker[Session]) -> Engine | None:
    bind = sessions.kw.get("bind")
    return bind if isinstance(bind, Engine) else None


def writer_turn(sessions: sessionmaker[Session]) -> AbstractContextManager[object]:
    """Hold the process's write turn for ``sessions``' SQLite database (a no-op elsewhere);
    enter it before opening the transaction."""
    engine = _engine(sessions)
    if engine is None or engine.dialect.name != "sqlite":
        return nullcontext()
    with _GUARD:
        lock = _LOCKS.setdefault(engine, threading.RLock())
    return lock


@contextmanager
def write_transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """``sessions.begin()`` taken in the process's write turn."""
    with writer_turn(sessions), sessions.begin() as session:
        yield session


@contextmanager
def write_connection(sessions: sessionmaker[Session]) -> Iterator[Connection]:
    """:func:`write_transaction` without the ORM Session, for writers that use only Core or
    the DBAPI cursor: a transaction on the engine ``sessions`` is bound to."""
    engine = _engine(sessions)
    if engine is None:
        raise TypeError("write_connection needs sessions bound to an Engine")
    with writer_turn(sessions), engine.begin() as connection:
        yield connection
