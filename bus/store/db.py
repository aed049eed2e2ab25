"""Engines and migrations for the Message Store (SQLite embedded, PostgreSQL at scale)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bus.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_MIGRATION_LOCK = 4_242_001  # pg_advisory_lock key: one migrator at a time
#: The newest migration (bus/migrations/versions; tests/test_migrations.py checks it is the
#: one head). A store already there is opened without loading Alembic at all.
SCHEMA_HEAD = "0008_soap_password_overlap"


def create_store_engine(settings: Settings, **options: Any) -> Engine:
    """An engine with the pragmas the embedded default relies on (WAL, busy timeout,
    foreign keys, the configured ``synchronous``)."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options
        )
        synchronous = settings.sqlite_synchronous.value

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own BEGIN handling would defer locks; take them explicitly instead.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Writers queue on the busy timeout at BEGIN instead of failing at the first write.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One process migrates at a time: a file lock beside a SQLite file, an advisory lock on
    PostgreSQL."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        with Path(f"{url.database}.migrate.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    if url.get_backend_name() == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
        return
    yield


def migrate(engine: Engine) -> None:
    """Bring the schema to the single head (no-op when it is there already).

    Every process opens the store, and nearly always it is at the head already: that is one
    query here. Alembic (~11 MB of a process's memory, and its environment run on every
    start) is loaded only when there is something to migrate."""
    if schema_version(engine) == SCHEMA_HEAD:
        return
    from alembic import command

    with _migration_lock(engine):
        command.upgrade(_alembic_config(engine), "head")


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def schema_version(engine: Engine) -> str | None:
    """The store's Alembic revision; None for a store never migrated."""
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version"))
            found = versions.scalars().all()
    except DBAPIError:  # no version table yet
        return None
    return found[0] if len(found) == 1 else None


def migration_heads() -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


@dataclass(frozen=True, slots=True)
class Store:
    engine: Engine
    sessions: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def open_store(settings: Settings) -> Store:
    """The migrated store for these settings (any command on an empty database migrates it)."""
    engine = create_store_engine(settings)
    migrate(engine)
    return Store(engine, session_factory(engine))
