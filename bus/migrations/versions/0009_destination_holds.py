"""A destination held by its own ``Retry-After``: until when, and why.

Dispatch holds a destination that answered 408/429/503 with ``Retry-After`` — sends it
nothing, from any worker — until the time it asked for. The hold has columns of its own
beside an operator's pause (``paused``, ``reason``, ``changed_at``, ``changed_by`` stay the
operator's): ``held_until`` (no hold when null or past) and ``held_reason`` (the answer and
the wait, e.g. ``HTTP 429 Too Many Requests; Retry-After 60 s``). Both nullable: existing
rows mean "not held"; adding a nullable column needs no table rebuild on SQLite.

Revision ID: 0009_destination_holds
Revises: 0008_soap_password_overlap
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_destination_holds"
down_revision = "0008_soap_password_overlap"
branch_labels = None
depends_on = None

_TABLE = "destination_states"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column(_TABLE, sa.Column("held_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # a hold in force is dropped: the destination is sent to on the next round
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("held_reason")
        batch.drop_column("held_until")
