"""Multi-row ``INSERT``\\s straight through the DBAPI cursor, for the Store stage's hot path.

SQLAlchemy Core spends more CPU on a statement than SQLite or PostgreSQL does: per execution
the cache look-up, the execution context and result set-up, per row the parameter dictionary
and the "insertmanyvalues" batching. The Store stage's inserts are fixed, so here they are
rendered once per dialect and row count, and each value goes through the very bind processor
SQLAlchemy would apply to its column (the stored rows are compared with Core's on SQLite and
PostgreSQL in the tests). The cursor is the connection's own, so the statements run in the
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.exc import DBAPIError

PARAMETERS_PER_STATEMENT = 999  # SQLite's historical limit of host parameters
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class BulkInsert:
    """``INSERT INTO table (columns) VALUES (…), (…) [ON CONFLICT …] [RETURNING …]``.

    ``conflict`` is the dialect-neutral ``ON CONFLICT`` clause (the same text on SQLite and
    PostgreSQL), ``returning`` the columns each inserted row hands back — in no promised
    order: callers match them by their values."""

    table: Table
    columns: tuple[str, ...]
    conflict: str = ""
    returning: tuple[str, ...] = ()

    def execute(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """Insert ``rows`` (values in ``columns`` order); the returned rows, if any."""
        dialect = connection.dialect
        processors = _processors(self, dialect)
        width = len(self.columns)
        per_statement = max(1, PARAMETERS_PER_STATEMENT // width)
        cursor = _cursor(connection)
        found: list[Any] = []
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                values = [
                    value if processor is None else processor(value)
                    for row in chunk
                    for value, processor in zip(row, processors, strict=True)
                ]
                _run(connection, cursor, _sql(self, dialect, len(chunk)), values)
                if self.returning:
                    found.extend(cursor.fetchall())
        finally:
            cursor.close()
        return found


def query(connection: Connection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """Run ``sql`` (``?`` placeholders, text valid on both dialects) through the connection's
    DBAPI cursor with ``parameters`` as they are (no bind processing: strings and integers);
    the rows it returns."""
    cursor = _cursor(connection)
    try:
        _run(connection, cursor, _placeholders(sql, connection.dialect), list(parameters))
        return list(cursor.fetchall()) if cursor.description is not None else []
    finally:
        cursor.close()


def _run(connection: Connection, cursor: Any, sql: str, values: list[Any]) -> None:
    try:
        cursor.execute(sql, values)
    except connection.dialect.loaded_dbapi.Error as error:
        raise _wrapped(connection, cursor, sql, error) from error


@lru_cache(maxsize=256)
def _placeholders(sql: str, dialect: Dialect) -> str:
    """``?`` as the driver wants it: as is for SQLite, ``$1``, ``$2``… for psycopg."""
    if dialect.paramstyle == "qmark":
        return sql
    if dialect.driver != "psycopg":
        raise NotImplementedError(f"no raw statements through {dialect.driver}")
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]


def _wrapped(connection: Connection, cursor: Any, sql: str, error: Exception) -> Exception:
    """The DBAPI error as SQLAlchemy raises it (``IntegrityError`` for a key collision: the
    callers retry on that), without the parameters (message bodies); a lost connection is
    invalidated, as SQLAlchemy would."""
    dialect = connection.dialect
    lost = dialect.is_disconnect(cast(Any, error), connection.connection.dbapi_connection, cursor)
    if lost:
        connection.invalidate(error)
    return DBAPIError.instance(
        sql,
        None,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=dialect,
    )


@lru_cache(maxsize=64)
def _processors(insert: BulkInsert, dialect: Dialect) -> tuple[Processor, ...]:
    """The bind processor SQLAlchemy applies to each column's values on ``dialect``."""
    return tuple(
        insert.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in insert.columns
    )


def _cursor(connection: Connection) -> Any:
    """A cursor of the connection's DBAPI connection: on PostgreSQL psycopg's raw cursor,
    which takes ``$n`` placeholders as they are (its default cursor parses the query for
    ``%s`` in Python each time a statement is too long for its cache, as these are)."""
    if connection.dialect.driver == "psycopg":
        return _raw_cursor()(connection.connection.dbapi_connection)
    return connection.connection.cursor()


@cache
def _raw_cursor() -> Any:
    """psycopg's ``RawCursor`` class (imported once, and only on PostgreSQL)."""
    from psycopg import RawCursor

    return RawCursor


@lru_cache(maxsize=256)
def _sql(insert: BulkInsert, dialect: Dialect, rows: int) -> str:
    quote = dialect.identifier_preparer.quote
    group = f"({', '.join(['?'] * len(insert.columns))})"
    text = (
        f"INSERT INTO {quote(insert.table.name)} ({', '.join(map(quote, insert.columns))}) "
        f"VALUES {', '.join([group] * rows)}"
    )
    if insert.conflict:
        text += f" {insert.conflict}"
    if insert.returning:
        text += f" RETURNING {', '.join(map(quote, insert.returning))}"
    return _placeholders(text, dialect)
