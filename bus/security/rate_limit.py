"""Rate limits per connected system, counted in the database (fixed windows of one second and
one minute) so every hub process counts against the same limit. The windows are the
database's clock (:func:`bus.store.clock.database_now`, read in the counting transaction):
hosts whose clocks differ would otherwise count in different windows — each allowing its own
quota — and a host stepped back would count in an old, full window and be refused.

A refused request is answered (HTTP 429 with ``Retry-After``, or a SOAP Client fault) and
never stored: nothing is dropped silently, the sender keeps the message and sends it again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bus.config.models import RateLimit
from bus.store.clock import database_now
from bus.store.models import RateWindow

_UNITS = (("s", 1), ("m", 60))
_PURGE_EVERY = 256  # delete windows older than two minutes once per this many counts
#: Counts made in this process, by every limiter: the console makes a limiter per login, which
#: alone never reached ``_PURGE_EVERY`` (a login flood's windows were never deleted).
_COUNTED = itertools.count(1)


def _upsert(session: Session) -> Callable[..., Any]:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _now(session: Session) -> float:
    return database_now(session.connection()).timestamp()


class RateLimiter:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def admit(self, system: str, limit: RateLimit, now: float | None = None) -> int | None:
        """Count one request of ``system``; ``None`` when within ``limit``, else the seconds
        until the window that refused it ends (for ``Retry-After``). ``now`` (POSIX
        seconds): the database's clock unless given."""
        limits = {"s": limit.per_second, "m": limit.per_minute}
        retry_after: int | None = None
        with self._sessions.begin() as session:
            now = _now(session) if now is None else now
            insert = _upsert(session)
            for unit, length in _UNITS:
                allowed = limits[unit]
                if allowed is None:
                    continue
                start = int(now // length) * length
                statement = insert(RateWindow).values(
                    system=system, unit=unit, window_start=start, count=1
                )
                statement = statement.on_conflict_do_update(
                    index_elements=["system", "unit", "window_start"],
                    set_={"count": RateWindow.count + 1},
                ).returning(RateWindow.count)
                count = session.execute(statement).scalar_one()
                if count > allowed:
                    wait = max(1, math.ceil(start + length - now))
                    retry_after = max(retry_after or 0, wait)
            if next(_COUNTED) % _PURGE_EVERY == 0:
                session.execute(delete(RateWindow).where(RateWindow.window_start < now - 120))
        return retry_after

    def waiting(self, system: str, limit: RateLimit, now: float | None = None) -> int | None:
        """Whether ``system`` has used up ``limit`` in the current windows, counting nothing
        (for a limit counted only on some outcomes, by :meth:`admit`): ``None`` when it has
        not, else the seconds until the window that is full ends."""
        limits = {"s": limit.per_second, "m": limit.per_minute}
        retry_after: int | None = None
        with self._sessions() as session:
            now = _now(session) if now is None else now
            for unit, length in _UNITS:
                allowed = limits[unit]
                if allowed is None:
                    continue
                start = int(now // length) * length
                count = session.scalar(
                    select(RateWindow.count).where(
                        RateWindow.system == system,
                        RateWindow.unit == unit,
                        RateWindow.window_start == start,
                    )
                )
                if count is not None and count >= allowed:
                    retry_after = max(retry_after or 0, max(1, math.ceil(start + length - now)))
        return retry_after
