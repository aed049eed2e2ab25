"""The messages' unique key starts with the messageId; its index replaces
``ix_messages_message_id``, and ``ix_messages_tenant`` goes too.

Readers find a message by its messageId and tenant, without the sending system
(``GET /api/v1/messages/{id}``, the console, ``renkei messages``/``dlq``, the Route stage's
``relates`` look-up): 0006 gave them an index of their own on ``message_id``, because the
unique key began with the tenant and the system. With the key in the order
(message_id, tenant, system) its one index serves those reads and still refuses a second
message with the same (tenant, system, messageId): every stored message updates one index on
random keys instead of two (the second cost a batch import 2-5 %, the more the larger the
store).

``ix_messages_tenant`` is the first column of ``ix_messages_feed`` (tenant, service, id),
which serves every search on the tenant as well. Left alone it would be worse than a
duplicate: SQLite (no statistics) walked it, in key order, for a messageId and tenant
look-up sorted by key (the ``relates`` look-up) — all of the tenant's messages — rather than
search the new unique index and sort the one row.

SQLite cannot change a constraint in place: the table is rebuilt as in 0005 (AUTOINCREMENT
kept; env.py turns foreign keys off around it) and its key sequence carried over, or the keys
of the newest messages purged before the rebuild would be handed out again. PostgreSQL
builds the new unique index before dropping the old ones.

Revision ID: 0007_messages_key_order
Revises: 0006_read_indexes
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op
from alembic.operations import BatchOperations
from sqlalchemy import text

revision = "0007_messages_key_order"
down_revision = "0006_read_indexes"
branch_labels = None
depends_on = None

_BY_TENANT = ["tenant", "system", "message_id"]
_BY_MESSAGE_ID = ["message_id", "tenant", "system"]
_INDEXES = ("message_id", "tenant")  # ix_messages_<column>, one column each


@contextmanager
def _messages() -> Iterator[BatchOperations]:
    """Changes to ``messages``; on SQLite the rebuilt table keeps AUTOINCREMENT and the
    largest key ever handed out (a rebuild would restart the sequence at the largest key in
    the table)."""
    bind = op.get_bind()
    last = None
    if bind.dialect.name == "sqlite":
        last = bind.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = 'messages'"))
    with op.batch_alter_table("messages", table_kwargs={"sqlite_autoincrement": True}) as batch:
        yield batch
    if last is not None:  # the copy's INSERT set it to the largest key copied (0: none)
        bind.execute(
            text("UPDATE sqlite_sequence SET seq = max(seq, :n) WHERE name = 'messages'"),
            {"n": last},
        )


def upgrade() -> None:
    with _messages() as batch:
        batch.create_unique_constraint(batch.f("uq_messages_message_id"), _BY_MESSAGE_ID)
        batch.drop_constraint(batch.f("uq_messages_tenant"), type_="unique")
        for column in _INDEXES:
            batch.drop_index(batch.f(f"ix_messages_{column}"))


def downgrade() -> None:
    with _messages() as batch:
        batch.create_unique_constraint(batch.f("uq_messages_tenant"), _BY_TENANT)
        batch.drop_constraint(batch.f("uq_messages_message_id"), type_="unique")
        for column in _INDEXES:
            batch.create_index(batch.f(f"ix_messages_{column}"), [column], unique=False)
