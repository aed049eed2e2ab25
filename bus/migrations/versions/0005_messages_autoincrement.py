"""SQLite: message keys are never reused (AUTOINCREMENT), so a PULL feed cursor that has read
the store's newest message never skips the message after it once that one is purged.

Without AUTOINCREMENT, SQLite gives a new row the largest key in use + 1: purging the newest
message frees its key for the next one, which a cursor at that key would never see.
PostgreSQL keys come from a sequence and are never reused: nothing to do there.

The table is rebuilt (SQLite cannot change a key in place); env.py turns foreign keys off
around it, so dropping the old table deletes no deliveries. Keys purged before this
migration (the feed marks) stay unused too.

Revision ID: 0005_messages_autoincrement
Revises: 0004_audit_checkpoints
"""

from __future__ import annotations

from alembic import op

revision = "0005_messages_autoincrement"
down_revision = "0004_audit_checkpoints"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    with op.batch_alter_table(
        "messages", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=True)
    purged = "(SELECT coalesce(max(purged_through), 0) FROM feed_marks)"
    op.execute(f"UPDATE sqlite_sequence SET seq = max(seq, {purged}) WHERE name = 'messages'")
    op.execute(
        f"INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', {purged} "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages')"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=False)
