"""A delivery that waits for another one besides its subject's order: ``waits_for``.

A 訂正 whose subject (宛名番号 Y) differs from its original's (X) is keyed on its own subject,
so later messages of Y queue behind it, and carries the id of its original's delivery to the
same destination: it is claimable only once that delivery is neither pending nor dead
(docs/dispatch.md, 取消・訂正). Nullable, no foreign key and no index (the claim probes the
referenced row by its primary key): existing rows mean "waits for nothing", and adding a
nullable column needs no table rebuild on SQLite. Deliveries stored before the upgrade keep
the order they were given (a 訂正 keyed on its original's subject).

Revision ID: 0010_delivery_waits_for
Revises: 0009_destination_holds
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_delivery_waits_for"
down_revision = "0009_destination_holds"
branch_labels = None
depends_on = None

_TABLE = "deliveries"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("waits_for", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # a 訂正 keyed on its new subject then waits for nothing but that subject's order
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("waits_for")
