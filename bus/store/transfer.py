"""Copy an embedded store (a SQLite file) into an empty PostgreSQL database: the move from
``renkei serve`` on SQLite to the scale-out store (``renkei store copy``).

Every table of the models is copied row by row with its primary keys, in foreign-key order,
streamed in batches (memory stays flat however large the store), in **one** target
transaction: a copy that fails or does not verify is rolled back and leaves the target empty,
so it can simply be run again. The source is held with ``BEGIN IMMEDIATE`` for the whole copy
(a consistent snapshot; no writer can commit meanwhile) after checking that no other process
has the file open (a running hub). Before the commit the copy is verified: the rows of every
table are counted on both sides and every audit chain is verified on the target. Each
PostgreSQL sequence is set past the highest key ever handed out, SQLite's ``sqlite_sequence``
included (a purged message's key is never given out again: feed cursors rely on it).

What is not in the database stays where it is, under ``RENKEI_DATA_DIR``: ``secrets.key``,
the import work files (batches and their resume cursors) and the resident index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    Table,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.settings import Settings
from bus.store.admin_audit import record_admin_action
from bus.store.audit_verify import verify_audit
from bus.store.db import create_store_engine, migrate
from bus.store.models import Base

#: Rows per INSERT batch (and per fetch from the source).
DEFAULT_BATCH_ROWS = 2000
#: Seconds the copy waits for the source's write lock before refusing (a writer holds it).
SOURCE_LOCK_WAIT_S = 5.0
_SQLITE_INTERNAL = {"sqlite_sequence", "sqlite_stat1", "sqlite_stat4", "alembic_version"}


class CopyRefused(Exception):
    """The copy was refused or rolled back; ``finding`` says why (RK-OPS023…026)."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        super().__init__(f"{finding.code} {finding.message_ja} / {finding.message_en}")


@dataclass(frozen=True, slots=True)
class Progress:
    table: str
    done: int
    total: int
    seconds: float  # since this table's copy began


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    rows: int
    seconds: float


@dataclass(slots=True)
class CopyReport:
    source: str
    target: str
    tables: list[TableCopy] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # table → next key handed out
    audit_chains: int = 0
    audit_records: int = 0
    #: chains already broken in the source, broken the same way in the copy (renkei audit verify)
    inherited_breaks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "tables": {t.table: t.rows for t in self.tables},
            "rows": self.rows,
            "seconds": round(self.seconds, 2),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
            "sequences": self.sequences,
            "audit": {
                "chains": self.audit_chains,
                "records": self.audit_records,
                "ok": not self.inherited_breaks,
                "broken_in_source": self.inherited_breaks,
            },
        }


def _refused(code: str, **params: Any) -> CopyRefused:
    return CopyRefused(make_finding(code, path="/database", **params))


def _unsuitable(where: str, reason_ja: str, reason_en: str) -> CopyRefused:
    return _refused("RK-OPS025", actual=where, reason_ja=reason_ja, reason_en=reason_en)


def shown(url: str) -> str:
    """The URL without its password (for messages and the report)."""
    return make_url(url).render_as_string(hide_password=True)


def source_url(value: str) -> str:
    """A SQLite URL from ``--from``: a URL as given, else a path to the file."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


# --- the source -------------------------------------------------------------------------------


def _source_file(url: str) -> Path:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise _unsuitable(
            shown(url),
            "コピー元は組み込みストア（SQLite のファイル）に限ります（--from）",
            "the source must be an embedded store, a SQLite file (--from)",
        )
    path = Path(parsed.database).resolve()
    if not path.is_file():
        raise _unsuitable(
            str(path), "コピー元のファイルがありません", "there is no such source file"
        )
    return path


def processes_holding(path: Path) -> list[int]:
    """Other processes that have the SQLite file (or its ``-wal``/``-shm``) open, as far as
    ``/proc`` shows them (Linux; the processes of this account, all of them for root). A
    running hub always has them open."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if any(name in names for name in _open_files(entry)):
            found.append(int(entry.name))
    return sorted(found)


def _open_files(process: Path) -> Iterator[str]:
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:  # another account's process, or gone meanwhile
        return
    for descriptor in descriptors:
        try:
            yield os.readlink(descriptor)
        except OSError:
            continue


def _source_engine(url: str) -> Engine:
    """A plain engine on the source: no hub pragmas, pysqlite's own transaction handling off
    (the copy opens ``BEGIN IMMEDIATE`` itself), a short busy wait."""
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": SOURCE_LOCK_WAIT_S})

    @event.listens_for(engine, "connect")
    def _manual(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    return engine


def _hold_source(connection: Connection, where: str) -> None:
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    except OperationalError as error:
        raise _refused(
            "RK-OPS024", actual=where, holders=f"write lock held: {error.orig}"[:200]
        ) from error


def _check_source_tables(connection: Connection, where: str) -> None:
    """Refuse a source holding a table no model describes (it would be left behind)."""
    names = connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    unknown = sorted(set(names.scalars()) - set(Base.metadata.tables) - _SQLITE_INTERNAL)
    if unknown:
        raise _unsuitable(
            where,
            f"このバージョンの renkei が知らない表があります（{', '.join(unknown)}）",
            f"it holds tables this renkei does not know ({', '.join(unknown)})",
        )


def _sqlite_sequences(connection: Connection) -> dict[str, int]:
    """The highest key SQLite ever handed out per AUTOINCREMENT table (purged rows too)."""
    rows = connection.exec_driver_sql("SELECT name, seq FROM sqlite_sequence")
    return {str(name): int(seq or 0) for name, seq in rows}


# --- the target -------------------------------------------------------------------------------


def _require_postgresql(url: str) -> None:
    if make_url(url).get_backend_name() != "postgresql":
        raise _unsuitable(
            shown(url),
            "移行先は PostgreSQL のデータベースに限ります（--to postgresql+psycopg://…）",
            "the target must be a PostgreSQL database (--to postgresql+psycopg://…)",
        )


def _target_engine(url: str, settings: Settings) -> Engine:
    engine = create_store_engine(settings.model_copy(update={"database_url": url}))
    try:
        migrate(engine)  # an empty database gets the schema; another application's is refused
    except BaseException:
        engine.dispose()
        raise
    return engine


def _refuse_non_empty(connection: Connection, where: str) -> None:
    held = []
    for table in Base.metadata.sorted_tables:
        rows = connection.scalar(select(func.count()).select_from(table)) or 0
        if rows:
            held.append(f"{table.name} {rows}")
    if held:
        raise _refused("RK-OPS023", actual=where, tables=", ".join(held))


# --- the copy ---------------------------------------------------------------------------------


def _converter(table: Table) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A source row as the values ``COPY`` writes: SQLite hands back naive UTC datetimes
    (PostgreSQL would read them in its session's zone, Japan time on many servers) and
    decoded JSON (written back as JSON)."""
    from psycopg.types.json import Json  # the target's driver, loaded for a copy only

    dates = [i for i, c in enumerate(table.columns) if isinstance(c.type, DateTime)]
    documents = [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row)
        for i in dates:
            value = values[i]
            if isinstance(value, datetime) and value.tzinfo is None:
                values[i] = value.replace(tzinfo=UTC)
        for i in documents:
            values[i] = Json(values[i])
        return tuple(values)

    return convert


def _copy_table(
    source: Connection,
    target: Connection,
    table: Table,
    total: int,
    batch_rows: int,
    progress: Callable[[Progress], None] | None,
) -> TableCopy:
    """Stream the table's rows in key order into PostgreSQL's ``COPY … FROM STDIN`` on the
    target's own connection (its transaction): ~10 times the rows per second of batched
    INSERT statements, which spend their time in a round of the pipeline per row."""
    started, done = monotonic(), 0
    convert = _converter(table)
    quote = target.dialect.identifier_preparer.quote
    columns = ", ".join(quote(c.name) for c in table.columns)
    ordered = select(table).order_by(*table.primary_key.columns)
    result = source.execution_options(yield_per=batch_rows).execute(ordered)
    driver: Any = target.connection.driver_connection  # psycopg's Connection
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {quote(table.name)} ({columns}) FROM STDIN") as copy,
    ):
        for batch in result.partitions(batch_rows):
            for row in batch:
                copy.write_row(convert(row))
            done += len(batch)
            if progress is not None:
                progress(Progress(table.name, done, total, monotonic() - started))
    return TableCopy(table.name, done, monotonic() - started)


def _set_sequences(target: Connection, highest_ever: dict[str, int]) -> dict[str, int]:
    """Each serial/identity key's sequence past the highest key the source ever handed out:
    the next new row's key (what a new row gets) per table."""
    following: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1:
            continue
        column = keys[0]
        sequence = target.scalar(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.name, "column": column.name},
        )
        if sequence is None:
            continue
        stored = target.scalar(select(func.max(column))) or 0
        high = max(int(stored), highest_ever.get(table.name, 0))
        if high:
            target.execute(text("SELECT setval(:s, :v, true)"), {"s": sequence, "v": high})
        else:
            target.execute(text("SELECT setval(:s, 1, false)"), {"s": sequence})
        following[table.name] = high + 1
    return following


def _verify(
    source: Connection, target: Connection, expected: dict[str, int], report: CopyReport
) -> None:
    """Counts on both sides, then every audit chain on the target; a chain broken already in
    the source (at the same seq) is not the copy's fault and does not stop it."""
    for table in Base.metadata.sorted_tables:
        copied = target.scalar(select(func.count()).select_from(table)) or 0
        if copied != expected[table.name]:
            raise _refused(
                "RK-OPS026",
                actual=f"{table.name}: {expected[table.name]} rows in the source, {copied} copied",
            )
    with Session(bind=target) as session:
        verdicts = verify_audit(session)
    broken = [v for v in verdicts if v.first_break is not None]
    before: set[tuple[str, int]] = set()
    if broken:
        with Session(bind=source) as session:
            chains = [v.chain for v in broken]
            before = {
                (v.chain, v.first_break.seq)
                for v in verify_audit(session, chains=chains)
                if v.first_break is not None
            }
    for verdict in broken:
        first = verdict.first_break
        if first is None:
            continue
        where = f"audit chain {verdict.chain} at seq {first.seq}: {first.reason}"
        if (verdict.chain, first.seq) not in before:
            raise _refused("RK-OPS026", actual=where[:300])
        report.inherited_breaks.append(where)
    report.audit_chains = len(verdicts)
    report.audit_records = sum(v.records for v in verdicts)


def copy_store(
    source: str,
    target: str,
    *,
    settings: Settings | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[Progress], None] | None = None,
    actor: str | None = None,
) -> CopyReport:
    """Copy the SQLite store at URL ``source`` into the empty PostgreSQL database at URL
    ``target`` (migrated here when it has no schema yet), and record the copy by ``actor`` on
    the target's admin chain (``store.copy``) in the same transaction: every town's personal
    data moved at once is an operator action like any other. Raises :class:`CopyRefused`."""
    settings = settings or Settings()
    started = monotonic()
    _require_postgresql(target)
    path = _source_file(source)
    holders = processes_holding(path)
    if holders:
        listed = ", ".join(str(pid) for pid in holders[:10])
        raise _refused("RK-OPS024", actual=str(path), holders=f"process id {listed}")
    migrate_source = create_store_engine(settings.model_copy(update={"database_url": source}))
    try:
        migrate(migrate_source)  # an older renkei's store is upgraded, as by any command
    finally:
        migrate_source.dispose()
    report = CopyReport(str(path), shown(target))
    source_engine, target_engine = _source_engine(source), _target_engine(target, settings)
    try:
        with source_engine.connect() as reading:
            _hold_source(reading, str(path))
            try:
                _copy_held(reading, target_engine, report, batch_rows, progress, actor)
            finally:
                if reading.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                    reading.exec_driver_sql("ROLLBACK")
    finally:
        source_engine.dispose()
        target_engine.dispose()
    report.seconds = monotonic() - started
    return report


def _copy_held(
    reading: Connection,
    target_engine: Engine,
    report: CopyReport,
    batch_rows: int,
    progress: Callable[[Progress], None] | None,
    actor: str | None,
) -> None:
    """The copy itself, with the source held: one target transaction, verified, then
    recorded on the admin chain, before its commit."""
    _check_source_tables(reading, report.source)
    expected = {
        t.name: reading.scalar(select(func.count()).select_from(t)) or 0
        for t in Base.metadata.sorted_tables
    }
    with target_engine.begin() as writing:
        _refuse_non_empty(writing, report.target)
        step = "?"
        try:
            for table in Base.metadata.sorted_tables:
                step = table.name
                copied = _copy_table(
                    reading, writing, table, expected[table.name], batch_rows, progress
                )
                report.tables.append(copied)
            step = "sequences"
            report.sequences = _set_sequences(writing, _sqlite_sequences(reading))
        except (DBAPIError, writing.dialect.loaded_dbapi.Error) as error:  # COPY: the driver's
            reason = str(getattr(error, "orig", error)).splitlines()[0][:200]
            raise _refused("RK-OPS026", actual=f"{step}: {reason}") from error
        _verify(reading, writing, expected, report)
        with Session(bind=writing) as session:  # joins the target transaction, no commit here
            record_admin_action(session, actor, "store.copy", _copy_record(report))
            session.flush()


def _copy_record(report: CopyReport) -> dict[str, Any]:
    """What the admin chain keeps of a copy: where from and to (no password), how much."""
    return {
        "source": report.source,
        "target": report.target,
        "rows": report.rows,
        "audit_records": report.audit_records,
    }
