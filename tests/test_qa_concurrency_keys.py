"""Two operators at once: `renkei keys rotate` of one system twice at the same time. As one
after the other, every key but the newest must expire after the overlap.

On PostgreSQL each rotation read the keys before the other's new key was committed, so each
left the other's new key valid for ever (and missing from its `key.rotate` record)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bus.security.api_keys import issue_key, list_keys, rotate_keys
from bus.settings import Settings
from bus.store.db import open_store


class HeldCommit:
    """A sessionmaker whose ``begin()`` runs ``before_commit`` after its block, before the
    commit: the other rotation runs while this one's changes are not committed yet."""

    def __init__(self, sessions: sessionmaker[Session], before_commit: Callable[[], None]) -> None:
        self.sessions, self.before_commit = sessions, before_commit

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session
            self.before_commit()


@pytest.mark.postgres
def test_two_rotations_at_once_leave_one_key_without_an_end(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, database_lock_timeout=0
    )
    store = open_store(settings)
    other = threading.Thread(
        target=lambda: rotate_keys(store.sessions, "shuno", overlap=timedelta(hours=1))
    )

    def second_rotation() -> None:
        other.start()
        other.join(3)  # it reads the keys while the first is not committed (then waits)

    try:
        issue_key(store.sessions, "shuno")
        held = HeldCommit(store.sessions, second_rotation)
        rotate_keys(held, "shuno", overlap=timedelta(hours=1))  # type: ignore[arg-type]
        other.join(60)
        keys = list_keys(store.sessions, "shuno")
        assert len(keys) == 3
        assert [key.expires_at for key in keys].count(None) == 1
    finally:
        store.close()
