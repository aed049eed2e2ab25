"""Tell the operator on the terminal when a command upgraded the store's schema.

:func:`bus.store.db.migrate` records an upgrade as the ``store.migrated`` log line, but a CLI
command (other than ``renkei serve``) prints no log: run on a store an older renkei made, it
upgraded the store without a word, and the operator learnt of it only when the older renkei
refused the store (RK-OPS009). The CLI therefore turns that record into one line on standard
error, in the form of its other notices (Japanese, then English). Making a new store in an
empty database (``(empty)``) is what any first command does and is not announced.
"""

from __future__ import annotations

import logging

import typer

#: the logger and event :func:`bus.store.db.migrate` writes an upgrade with
STORE_LOGGER = "bus.store.db"
MIGRATED_EVENT = "store.migrated"
EMPTY_STORE = "(empty)"


class MigrationNotice(logging.Handler):
    """Echoes ``store.migrated`` of an existing store to standard error."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg != MIGRATED_EVENT:
            return
        before = getattr(record, "from_version", None)
        after = getattr(record, "to_version", None)
        if before is None or before == EMPTY_STORE:
            return
        typer.echo(
            f"メッセージストアを更新しました（スキーマ {before} → {after}） "
            f"store schema upgraded from {before} to {after}",
            err=True,
        )


def announce_migrations() -> None:
    """Install the notice on the store's logger (once; a second call changes nothing)."""
    logger = logging.getLogger(STORE_LOGGER)
    if any(isinstance(handler, MigrationNotice) for handler in logger.handlers):
        return
    logger.addHandler(MigrationNotice(logging.INFO))
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)  # else the record is never made
