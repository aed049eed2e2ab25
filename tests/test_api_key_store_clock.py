"""An API key's expiry is the store's clock (PostgreSQL's ``clock_timestamp()``), like every
other time the hub compares: a hub host whose clock is off neither refuses a valid key nor
accepts an expired one — and reading that clock costs no second statement per request."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bus.security import api_keys
from bus.security.api_keys import ApiKeyRegistry, issue_key
from bus.settings import Settings
from bus.store.clock import database_now
from bus.store.db import Store, open_store


@pytest.fixture
def store(postgres_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
    try:
        yield opened
    finally:
        opened.close()


def _host_clock_off(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    class Skewed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + offset

    monkeypatch.setattr(api_keys, "datetime", Skewed)


def _db_now(store: Store) -> datetime:
    with store.sessions() as session:
        return database_now(session.connection())


def test_a_host_clock_ahead_does_not_expire_a_valid_key(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = issue_key(store.sessions, "juki", valid_for=timedelta(hours=1))
    _host_clock_off(monkeypatch, timedelta(hours=2))
    assert ApiKeyRegistry(store.sessions).system_for(issued.key) == "juki"


def test_a_host_clock_behind_does_not_keep_an_expired_key(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = _db_now(store) - timedelta(hours=2)
    issued = issue_key(store.sessions, "juki", valid_for=timedelta(hours=1), now=start)
    _host_clock_off(monkeypatch, timedelta(hours=-2))
    assert ApiKeyRegistry(store.sessions).system_for(issued.key) is None


def test_a_key_check_is_one_statement(store: Store) -> None:
    issued = issue_key(store.sessions, "juki", valid_for=timedelta(hours=1))
    registry = ApiKeyRegistry(store.sessions)
    assert registry.system_for(issued.key) == "juki"  # the hash checked once
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert registry.system_for(issued.key) == "juki"
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    assert issued.expires_at is not None and issued.expires_at > datetime.now(UTC)
