"""Engines and migrations for the Message Store (SQLite embedded, PostgreSQL at scale)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.settings import Settings
from bus.store.storage_full import is_storage_full

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Bytes the SQLite write-ahead log is cut back to whenever it starts again from its
#: beginning (``journal_size_limit``): without it the file keeps the size of its largest burst
#: (a big purge beside a busy hub) until the hub stops. A busy hub's log stays under 5 MiB.
SQLITE_WAL_SIZE_LIMIT = 32 * 1024 * 1024
#: Seconds libpq waits for a new PostgreSQL connection (:func:`_connect_args`).
PG_CONNECT_TIMEOUT_S = 5
_PG_MIGRATION_LOCK = 4_242_001  # pg_advisory_lock key: one migrator at a time
#: The newest migration (bus/migrations/versions; tests/test_migrations.py checks it is the
#: one head). A store already there is opened without loading Alembic at all.
SCHEMA_HEAD = "0011_messages_subject_index"

log = logging.getLogger(__name__)


def create_store_engine(settings: Settings, **options: Any) -> Engine:
    """An engine with the pragmas the embedded default relies on (WAL, busy timeout,
    foreign keys, the configured ``synchronous``); on PostgreSQL, each connection's
    ``lock_timeout`` is ``RENKEI_DATABASE_LOCK_TIMEOUT`` (set once per new connection, not
    per statement), so a statement behind a lock held elsewhere fails (SQLSTATE 55P03, an
    ingest refused RK-STO008) instead of waiting for as long as the lock is held; and a new
    connection gives up after libpq's ``connect_timeout`` (:func:`_connect_args`)."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            hide_parameters=True,  # an error's text is logged: no 宛名番号, no message body
            **options,
        )
        synchronous = settings.sqlite_synchronous.value

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own BEGIN handling would defer locks; take them explicitly instead.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # a new file's pages can then be given back in short steps beside the running hub
            # (renkei store compact); on an existing file it only takes effect when the file
            # is rebuilt (VACUUM), so a store made before stays as it is until then
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            if connection.get_execution_options().get(_SNAPSHOT):
                connection.exec_driver_sql("BEGIN")  # a WAL reader: no lock (read_snapshot)
                return
            # Writers queue on the busy timeout at BEGIN instead of failing at the first write.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        connect_args=_connect_args(url),
        hide_parameters=True,  # as above
        **options,
    )
    lock_timeout_ms = round(settings.database_lock_timeout * 1000)
    if url.get_backend_name() == "postgresql" and lock_timeout_ms > 0:

        @event.listens_for(engine, "connect")
        def _lock_timeout(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET lock_timeout = {lock_timeout_ms}")
            cursor.close()
            dbapi_connection.commit()

    return engine


def _connect_args(url: URL) -> dict[str, Any]:
    """On PostgreSQL, libpq's ``connect_timeout`` (:data:`PG_CONNECT_TIMEOUT_S`): a host
    that drops the packets makes a new connection fail (an ingest refused RK-STO008,
    ``/readyz`` not ready) instead of hanging for ever. A ``connect_timeout`` in the URL's
    query, or ``PGCONNECT_TIMEOUT`` in the environment, is left to libpq."""
    given = "connect_timeout" in url.query or "PGCONNECT_TIMEOUT" in os.environ
    if url.get_backend_name() != "postgresql" or given:
        return {}
    return {"connect_timeout": PG_CONNECT_TIMEOUT_S}


def _unbounded(engine: Engine) -> Engine:
    """An engine on the same PostgreSQL database without the hub's ``lock_timeout``, for a
    migration: it must wait behind another process's migration (the advisory lock) and for
    the table locks its DDL takes, however long that is. Any other database: ``engine``."""
    if engine.url.get_backend_name() != "postgresql":
        return engine
    return create_engine(engine.url, poolclass=NullPool, connect_args=_connect_args(engine.url))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


#: the execution option of a :func:`read_snapshot` connection on SQLite
_SNAPSHOT = "renkei_read_snapshot"


def read_snapshot(sessions: sessionmaker[Session]) -> Session:
    """A read-only session that sees the store as of its first read for as long as it is
    open, and holds no writer back: for long reads (an export) while the hub serves. Every
    other SQLite transaction begins ``IMMEDIATE`` (the one write lock, taken at BEGIN): a long
    read there stalled every ingest and claim for its length, past the 30 s busy timeout.
    SQLite: a deferred transaction, whose first read fixes its WAL snapshot (the WAL grows
    meanwhile: checkpoints cannot pass a reader). PostgreSQL: ``REPEATABLE READ READ ONLY``,
    one snapshot for every statement rather than one per statement."""
    engine = sessions.kw["bind"]
    if engine.dialect.name == "sqlite":
        bound = engine.execution_options(**{_SNAPSHOT: True})
    else:
        bound = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    return sessions(bind=bound)


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


class StoreOpenError(Exception):
    """The store cannot be opened, for a reason an operator must act on: the database cannot
    be reached (RK-OPS001), it is not a renkei store (RK-OPS008), or its schema is newer than
    this renkei (RK-OPS009). Under the ``renkei`` CLI it is raised as a click error of the CLI
    (:func:`_refusal`): the command prints the coded message, no traceback, and exits 2."""

    exit_code = 2

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        self.message = f"{finding.code} {finding.message_ja} / {finding.message_en}"
        super().__init__(self.message)


@cache
def _cli_flavour() -> type[StoreOpenError]:
    """:class:`StoreOpenError` that typer's command runner also treats as its own error
    (typer ships its own copy of click, whose ``ClickException`` it catches: reached here
    through the public ``typer.BadParameter``). Built on first need, so a process that never
    loaded typer (the HTTP processes) does not load it for this."""
    typer: Any = sys.modules["typer"]
    base = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return type("StoreOpenError", (StoreOpenError, base), {})


def _refusal(finding: Finding) -> StoreOpenError:
    flavour = _cli_flavour() if "typer" in sys.modules else StoreOpenError
    return flavour(finding)


def _reason(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    first = str(original).splitlines()[0] if str(original) else ""
    return f"{type(original).__name__}: {first}"[:200]


#: SQLite's SQLITE_BUSY: another connection held the lock for the whole busy timeout
_SQLITE_BUSY = 5
#: PostgreSQL's lock_not_available: another session held a lock for the whole lock_timeout
_PG_LOCK_NOT_AVAILABLE = "55P03"


def _lock_wait_ran_out(error: BaseException) -> bool:
    """Whether PostgreSQL gave up waiting for a lock another session holds (RK-OPS016: the
    database is up; that session is found in pg_stat_activity)."""
    original = getattr(error, "orig", None) or error
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return state == _PG_LOCK_NOT_AVAILABLE


def unreachable_finding(error: BaseException, actual: str, path: str = "/database") -> Finding:
    """What a command or the running hub tells of a store it could not use now: RK-OPS013
    when another process held the SQLite store's lock for the whole busy timeout (the
    operator stops that process: the database is not down), RK-OPS015 when it has no room (a
    full disk: opening a SQLite store fails with a "disk I/O error" growing its ``-shm``
    file, a write with "database or disk is full"), RK-OPS016 when another PostgreSQL session
    held a lock past ``lock_timeout``, else RK-OPS001 (the database cannot be reached)."""
    if is_storage_full(error):
        return make_finding("RK-OPS015", path=path, actual=actual)
    if _lock_wait_ran_out(error):
        return make_finding("RK-OPS016", path=path, actual=actual)
    original = getattr(error, "orig", None) or error
    code = (
        getattr(original, "sqlite_errorcode", None) if isinstance(original, sqlite3.Error) else None
    )
    locked = code is not None and code & 0xFF == _SQLITE_BUSY
    return make_finding("RK-OPS013" if locked else "RK-OPS001", path=path, actual=actual)


def migrate(engine: Engine) -> None:
    """Bring the schema to the single head (no-op when it is there already).

    Every process opens the store, and nearly always it is at the head already: that is one
    query here. Alembic (~11 MB of a process's memory, and its environment run on every
    start) is loaded only when there is something to migrate. Only an empty database or an
    older renkei store is migrated: another application's database, or a store a newer
    renkei has migrated, is refused (:class:`StoreOpenError`) and left as it is."""
    try:
        version = schema_version(engine)
    except DBAPIError as error:  # schema_version answers None for a store never migrated
        where = engine.url.render_as_string(hide_password=True)
        raise _refusal(unreachable_finding(error, f"{where}: {_reason(error)}")) from error
    if version == SCHEMA_HEAD:
        return
    migrator = _unbounded(engine)
    try:
        with _migration_lock(migrator), _alembic_quiet():
            from alembic import command

            before, started = _check_migratable(migrator), monotonic()
            if before == SCHEMA_HEAD:  # another process migrated it while this one waited
                return
            command.upgrade(_alembic_config(migrator), "head")
        log.info(
            "store.migrated",
            extra={
                "from_version": before or "(empty)",
                "to_version": SCHEMA_HEAD,
                "seconds": round(monotonic() - started, 2),
            },
        )
    finally:
        if migrator is not engine:
            migrator.dispose()


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic's INFO lines (its plugins, "Context impl", one per revision) are noise in the
    hub's log; :func:`migrate` writes one ``store.migrated`` line instead. Its warnings and
    errors still pass."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        alembic_log.setLevel(level)


def _check_migratable(engine: Engine) -> str | None:
    """The store's version, read under the migration lock (so another process's migration is
    finished). Refuse a database holding tables but no renkei schema version, or a version
    this renkei does not know (a newer renkei's)."""
    from alembic.script import ScriptDirectory

    version = schema_version(engine)
    where = engine.url.render_as_string(hide_password=True)
    if version is None:
        with engine.connect() as connection:
            tables = sorted(set(inspect(connection).get_table_names()) - {"alembic_version"})
        if tables:
            shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
            actual = f"{where}: {len(tables)} tables ({shown}), no renkei schema version"
            raise _refusal(make_finding("RK-OPS008", path="/database", actual=actual))
        return None
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if version not in known:
        actual = f"{where}: {version}"
        raise _refusal(
            make_finding("RK-OPS009", path="/database", actual=actual, expected=SCHEMA_HEAD)
        )
    return version


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def schema_version(engine: Engine) -> str | None:
    """The store's Alembic revision; None for a store never migrated. A database that
    cannot be reached raises (SQLAlchemy's ``OperationalError``)."""
    with engine.connect() as connection:
        try:
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
    try:
        migrate(engine)
    except BaseException:  # refused or failed: no connection is left open behind it
        engine.dispose()
        raise
    return Store(engine, session_factory(engine))
