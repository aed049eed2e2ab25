"""Indexes on the keys the store reads by, and one duplicate index less.

A message looked up by its messageId and tenant (``GET /api/v1/messages/{id}``, the console,
``renkei dlq``) was found by scanning all of the tenant's messages: the unique key starts with
the sending system, which a reader does not know. A message's deliveries
(``deliveries.message_pk``), a delivery's attempts (``delivery_attempts.delivery_id``) and the
idempotency keys of a message (``idempotency_keys.message_pk``) were found by scanning the
whole table: every message status read, every console page and every purged message (the
retention job's queries and the foreign-key cascades) cost time in proportion to the store's
size, not to the message.

``ix_deliveries_order`` had exactly the columns of the unique constraint on
(tenant, destination, subject_key, sequence), whose own index serves the same look-ups:
every delivery paid for a second copy of it.

Revision ID: 0006_read_indexes
Revises: 0005_messages_autoincrement
"""

from __future__ import annotations

from alembic import op

revision = "0006_read_indexes"
down_revision = "0005_messages_autoincrement"
branch_labels = None
depends_on = None

_INDEXES = (
    ("messages", "message_id"),
    ("deliveries", "message_pk"),
    ("delivery_attempts", "delivery_id"),
    ("idempotency_keys", "message_pk"),
)
_ORDER = ("tenant", "destination", "subject_key", "sequence")


def upgrade() -> None:
    for table, column in _INDEXES:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)
    op.drop_index("ix_deliveries_order", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_order", "deliveries", list(_ORDER), unique=False)
    for table, column in _INDEXES:
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
