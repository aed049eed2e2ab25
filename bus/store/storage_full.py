"""Whether a database error says the Message Store has no room: SQLite's SQLITE_FULL (or an
SQLITE_IOERR of a failed write: a full disk also fails the ``-shm`` file's growth when a
process opens the store), PostgreSQL's disk_full. Its own module so that both the store's
opening (:mod:`bus.store.db`) and the running hub's write state
(:mod:`bus.store.write_health`) tell it apart from a store that cannot be reached."""

from __future__ import annotations

import sqlite3

#: SQLite's result codes that mean the database could not be written for want of room or of
#: a writable disk: SQLITE_FULL, and the SQLITE_IOERR variants of a failed write.
_SQLITE_FULL = 13
_SQLITE_WRITE_IOERRS = frozenset(
    {
        10 | (3 << 8),  # SQLITE_IOERR_WRITE
        10 | (4 << 8),  # SQLITE_IOERR_FSYNC
        10 | (5 << 8),  # SQLITE_IOERR_DIR_FSYNC
        10 | (6 << 8),  # SQLITE_IOERR_TRUNCATE
        10 | (19 << 8),  # SQLITE_IOERR_SHMSIZE
    }
)
_SQLITE_FULL_TEXT = "database or disk is full"
#: PostgreSQL's disk_full (class 53 "insufficient resources" also holds out_of_memory and
#: too_many_connections, which are not a full store and must not be answered as one).
_PG_DISK_FULL = frozenset({"53100"})


def is_storage_full(error: BaseException) -> bool:
    """Whether ``error`` (SQLAlchemy's wrapper, or the driver's own) says the store has no
    room or its disk cannot be written."""
    original = getattr(error, "orig", None) or error
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", None)
        if code is None:
            return _SQLITE_FULL_TEXT in str(original)
        return code & 0xFF == _SQLITE_FULL or code in _SQLITE_WRITE_IOERRS
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return state in _PG_DISK_FULL
