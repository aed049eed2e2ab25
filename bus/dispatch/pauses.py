"""What a worker's round learns of a pause committed after it claimed its deliveries.

A round is claimed with the pauses then in force; a destination paused while the round is
being sent would otherwise get the rest of its deliveries anyway (up to a whole round, after
`renkei destinations pause` had returned). Each send asks :meth:`PauseWatch.paused` first:
the paused systems are read again at most every ``interval`` seconds, so a busy worker reads
them a few times a second, not once per delivery. The pause command itself waits for the
deliveries still held (``operations.wait_for_sends``); this only makes that wait short.
"""

from __future__ import annotations

import threading
from time import monotonic

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bus.dispatch.claims import paused_destinations


class PauseWatch:
    def __init__(self, sessions: sessionmaker[Session], interval: float = 0.2) -> None:
        self._sessions = sessions
        self._interval = interval
        self._paused: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def paused(self, system: str) -> bool:
        """Whether ``system`` is paused, as read at most ``interval`` seconds ago."""
        with self._lock:
            if monotonic() - self._read_at >= self._interval:
                try:
                    with self._sessions() as session:
                        self._paused = frozenset(paused_destinations(session))
                except OperationalError:  # the store is down: the round's record says so
                    pass
                self._read_at = monotonic()
            return system in self._paused
