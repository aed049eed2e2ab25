"""One SQLite writer at a time: queued on a Python lock in a process, on a file lock between
processes.

SQLite allows one write transaction at a time (the engine opens each with ``BEGIN
IMMEDIATE``). Threads of one process that collide there wait in SQLite's busy handler, which
polls with growing sleeps (1, 2, 5, 10 … ms): under load the lock sits idle while every
waiter sleeps, and a hub that ingests and dispatches at once loses most of its throughput to
those sleeps. The hot paths (grouped ingest commits, dispatch rounds) therefore queue on a
lock per engine first, which hands the turn over as soon as the previous transaction ends;
the busy timeout still arbitrates with writers that do not take the turn (configuration,
console and security writes in a plain ``sessions.begin()``). PostgreSQL needs none of this:
its row locks are fine-grained.

The turn is re-entrant: the Store stage's group commit takes it before choosing its group
(:mod:`bus.store.group_commit`) and then opens the transaction inside it.

Several processes on one SQLite file (``renkei serve --http-workers N``) share the turn
through an exclusive ``flock`` on ``<database>.write.lock``, taken by the thread that holds its
own process's turn: a writer of another process waits in the kernel and is woken when the
turn is released, instead of polling SQLite's busy handler. The lock is only about waiting
well: each transaction is still serialised by SQLite itself (``BEGIN IMMEDIATE``), so a
writer that does not take the turn stays correct.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker


class _WriteTurn:
    """One SQLite database's write turn: a re-entrant lock among this process's threads and,
    for a database file, an exclusive ``flock`` among processes, held while the outermost
    holder is inside."""

    def __init__(self, database: str | None) -> None:
        self._threads = threading.RLock()
        self._depth = 0  # guarded by _threads
        self._path = f"{database}.write.lock" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd (a forked child opens its own)

    def __enter__(self) -> _WriteTurn:
        self._threads.acquire()
        if self._depth == 0 and self._path is not None:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def _file(self) -> int:
        assert self._path is not None
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
            weakref.finalize(self, os.close, self._fd)  # the engine is gone: so is the turn
        return self._fd


_LOCKS: weakref.WeakKeyDictionary[Engine, _WriteTurn] = weakref.WeakKeyDictionary()
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
        turn = _LOCKS.get(engine)
        if turn is None:
            turn = _LOCKS[engine] = _WriteTurn(engine.url.database)
    return turn


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
