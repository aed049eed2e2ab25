"""PULL feeds: the (tenant, service, id) index feeds read by, and the purge marks.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_marks",
        sa.Column("tenant", sa.String(length=6), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("purged_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "service", name=op.f("pk_feed_marks")),
    )
    op.create_index("ix_messages_feed", "messages", ["tenant", "service", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_messages_feed", table_name="messages")
    op.drop_table("feed_marks")
