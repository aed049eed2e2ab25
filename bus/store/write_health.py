"""Whether the Message Store can be written: a full disk (or SQLite's page limit, or
PostgreSQL's disk_full) recognised, remembered, logged once, and probed.

The pipeline tells :class:`WriteHealth` of each write that failed because the store is full
(:func:`is_storage_full`): the first such failure logs one warning (RK-OPS007) and marks the
store *failing*; the adapters answer each message refused meanwhile with RK-STO007 (503 and
``Retry-After``), without a traceback. The first message stored again, or the probe ``/readyz``
makes, clears it with one more warning (not a small record such as a refusal's audit: it may
fit the free space of a page while a message does not). A successful write pays only
:meth:`WriteHealth.succeeded`'s attribute check.

While the store is failing, readiness (bus/observability/readiness.py) is not ready, so a load
balancer stops sending; since no traffic then arrives, readiness itself probes at most once
per :data:`PROBE_INTERVAL` with a real write (:func:`probe_write`): a row of
:data:`PROBE_BYTES` that must allocate new pages, inserted and deleted in one committed
transaction. A transaction rolled back would prove nothing: SQLite writes nothing to disk
before the commit.

A store that cannot be reached *now* (:func:`is_store_unavailable`: the database refuses or
dropped the connection, or a lock was not granted within ``RENKEI_DATABASE_LOCK_TIMEOUT``, or
SQLite's busy timeout ran out) is the other retry-later state: the adapters answer RK-STO008
(503, ``Retry-After``) and call :meth:`WriteHealth.unreachable`, which logs one warning
(RK-OPS001) per outage; the first message stored again clears it with one more, through the
same :meth:`WriteHealth.succeeded` check. Readiness does not probe for it: its ``SELECT 1``
already says whether the database answers (on SQLite it begins ``BEGIN IMMEDIATE``, so it
waits out the busy timeout behind another process's lock, as a message does). When it is
SQLite's busy timeout that ran out because another process holds the store file's lock (an
old ``renkei serve``, a ``sqlite3`` shell in ``BEGIN EXCLUSIVE``), both say RK-OPS013 instead
(``unreachable_finding``: the database is not down, that process must stop).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import weakref
from datetime import UTC, datetime
from time import monotonic

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from bus.store.db import unreachable_finding
from bus.store.models import DestinationState
from bus.store.storage_full import is_storage_full as is_storage_full  # re-exported
from bus.store.writers import write_connection

log = logging.getLogger(__name__)

#: SQLite's result codes of a store that cannot be used *now*: SQLITE_BUSY (the busy timeout
#: ran out behind another writer), SQLITE_LOCKED, SQLITE_CANTOPEN (the data directory is gone).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 14})
#: PostgreSQL's states of a database that cannot serve this transaction now: class 08
#: (connection exception), admin/crash shutdown and "cannot connect now" (57P01–57P03),
#: too_many_connections (53300), lock_not_available (55P03: ``lock_timeout``) and
#: query_canceled (57014: a statement timeout or a cancel).
_PG_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "53300", "55P03", "57014"})

#: Seconds between readiness probes while the store is failing.
PROBE_INTERVAL = 1.0
#: The probe's row: a few pages, as a message with its deliveries and audit record takes.
PROBE_BYTES = 16 * 1024
#: The probe's row key: never a system id (those are ``[a-z0-9_-]``).
PROBE_SYSTEM = "~write-probe"


def is_store_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (SQLAlchemy's wrapper) says the store cannot be used *now* but may
    be in a moment: the message was not stored and the sender should resend later. A
    schema or programming error is not one (it will not pass by waiting)."""
    if isinstance(error, PoolTimeout):  # every pooled connection busy for the pool timeout
        return True
    if not isinstance(error, SQLAlchemyError):
        return False
    if getattr(error, "connection_invalidated", False):  # SQLAlchemy saw a disconnect
        return True
    original = getattr(error, "orig", None)
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state:
        return state.startswith("08") or state in _PG_UNAVAILABLE
    # the driver's OperationalError without a state: the connection could not be made or
    # was lost (refused, reset, the server closed it)
    return isinstance(error, OperationalError)


def describe(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    text = str(original).splitlines()[0] if str(original) else ""
    return f"{type(original).__name__}: {text}"[:200]


class WriteHealth:
    """One store's write state in this process (see the module)."""

    def __init__(self) -> None:
        self.failing = False
        self.reason: str | None = None
        self.since: float | None = None  # monotonic
        self.refused = 0  # writes failed since
        self.unreachable = False  # RK-STO008: the store did not answer (or a lock wait ran out)
        self._outage: tuple[float, str, str] | None = None  # since (monotonic), why, code
        self._outage_refused = 0
        self._probed = 0.0
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        """A write failed because the store is full; the first one is logged."""
        with self._lock:
            self.refused += 1
            if self.failing:
                return
            self.failing, self.reason, self.refused = True, describe(error), 1
            self.since = monotonic()
        log.warning(
            "RK-OPS007 the message store cannot be written (%s): messages are refused with "
            "RK-STO007 (503, Retry-After) and /readyz is not ready until a write succeeds; "
            "free space in the data directory (docs/operations.md)",
            self.reason,
        )

    def unavailable(self, error: BaseException) -> None:
        """A message was refused because the store could not be reached now
        (:func:`is_store_unavailable`); the first of an outage is logged."""
        reason = describe(error)
        code = unreachable_finding(error, reason).code
        with self._lock:
            self._outage_refused += 1
            if self.unreachable:
                return
            self.unreachable, self._outage_refused = True, 1
            self._outage = (monotonic(), reason, code)
        if code == "RK-OPS016":
            log.warning(
                "RK-OPS016 the message store is locked by another database session (%s): "
                "messages are refused with RK-STO008 (503, Retry-After) until it lets go; find "
                "that session in pg_stat_activity (docs/operations.md)",
                reason,
            )
            return
        if code == "RK-OPS013":
            log.warning(
                "RK-OPS013 the message store is locked by another process (%s): messages are "
                "refused with RK-STO008 (503, Retry-After) until it lets go; stop that process "
                "(docs/operations.md)",
                reason,
            )
            return
        log.warning(
            "RK-OPS001 the message store cannot be reached (%s): messages are refused with "
            "RK-STO008 (503, Retry-After) until it answers (docs/operations.md)",
            reason,
        )

    def succeeded(self) -> None:
        """A write committed: clears a failing state (a plain check otherwise)."""
        if self.failing:
            self._recover()
        if self.unreachable:
            self._reachable()

    def _reachable(self) -> None:
        with self._lock:
            if not self.unreachable or self._outage is None:  # another thread cleared it
                return
            self.unreachable = False
            seconds, code = monotonic() - self._outage[0], self._outage[2]
            refused, self._outage = self._outage_refused, None
        log.warning(
            "%s cleared: the message store took a message again after %.0f s "
            "(%d messages refused meanwhile)",
            code,
            seconds,
            refused,
        )

    def _recover(self) -> None:
        with self._lock:
            if not self.failing:  # another thread recovered first
                return
            self.failing = False
            seconds = monotonic() - (self.since or monotonic())
            refused = self.refused
        log.warning(
            "RK-OPS007 cleared: the message store is writable again after %.0f s "
            "(%d writes refused meanwhile)",
            seconds,
            refused,
        )

    def probe(self, sessions: sessionmaker[Session], *, force: bool = False) -> bool:
        """While failing, a real write at most once per :data:`PROBE_INTERVAL` (``force``:
        now); whether the store is writable."""
        if not self.failing:
            return True
        now = monotonic()
        with self._lock:
            if not force and now - self._probed < PROBE_INTERVAL:
                return False
            self._probed = now
        try:
            probe_write(sessions)
        except Exception as error:
            if not is_storage_full(error):  # another fault: the database check reports it
                log.info("store write probe failed: %s", describe(error))
            return False
        self.succeeded()
        return True


def probe_write(sessions: sessionmaker[Session]) -> None:
    """Insert and delete a :data:`PROBE_BYTES` row in one committed transaction (in the
    process's write turn); it needs new pages and a write to disk, as a message would.
    Nothing of it remains (other transactions never see the row)."""
    with write_connection(sessions) as connection:
        connection.execute(
            insert(DestinationState).values(
                system=PROBE_SYSTEM,
                paused=False,
                reason=secrets.token_hex(PROBE_BYTES // 2),  # incompressible
                changed_at=datetime.now(UTC),
            )
        )
        connection.execute(delete(DestinationState).where(DestinationState.system == PROBE_SYSTEM))


_HEALTH: weakref.WeakKeyDictionary[Engine, WriteHealth] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def write_health(bind: Engine | sessionmaker[Session]) -> WriteHealth:
    """The write state of the store behind ``bind`` (an engine, or sessions bound to one)."""
    engine = bind if isinstance(bind, Engine) else bind.kw.get("bind")
    if not isinstance(engine, Engine):
        return WriteHealth()  # unbound sessions (tools): a state of their own
    health = _HEALTH.get(engine)
    if health is None:
        with _GUARD:
            health = _HEALTH.setdefault(engine, WriteHealth())
    return health
