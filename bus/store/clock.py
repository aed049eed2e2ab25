"""The Message Store's clock: the one time every process compares leases, due times and
``Retry-After`` holds with (docs/reliability.md, "Clocks").

PostgreSQL (scale-out): the database server's ``clock_timestamp()``, read in the caller's
transaction. Worker and HTTP processes on other hosts then agree on what is expired and what
is due whatever their own clocks say: a worker host 3 minutes ahead used to take over
another worker's live lease and send its message a second time, and an HTTP host 3 minutes
ahead wrote due times the other hosts' workers reached only 3 minutes later.

SQLite (embedded): this machine's clock, which every process on the file shares.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, text

from bus.store.audit import utc

_NOW = text("SELECT clock_timestamp()")


def database_now(connection: Connection) -> datetime:
    """The store's current time (aware UTC) in ``connection``'s transaction."""
    if connection.dialect.name == "postgresql":
        return utc(connection.execute(_NOW).scalar_one())
    return datetime.now(UTC)
