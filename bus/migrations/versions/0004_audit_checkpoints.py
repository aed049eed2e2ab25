"""Signed audit checkpoints (docs/audit.md).

Revision ID: 0004_audit_checkpoints
Revises: 0003_identities
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_audit_checkpoints"
down_revision = "0003_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chain", sa.String(length=6), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sa.UniqueConstraint("chain", "seq", name=op.f("uq_audit_checkpoints_chain")),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
