"""A SOAP password's overlap: the previous WS-Security secret and its expiry.

``renkei keys soap --system ID --overlap-hours N`` keeps the password it replaces valid until
now + N hours, so a connected system still sending it is not refused (RK-AUT007) before its
operator has changed its configuration. The previous secret is sealed like the current one
(AES-256-GCM, the system id as associated data). Both columns are nullable: existing rows
mean "no previous password" and migrate without data changes; adding a nullable column needs
no table rebuild on SQLite.

Revision ID: 0008_soap_password_overlap
Revises: 0007_messages_key_order
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_soap_password_overlap"
down_revision = "0007_messages_key_order"
branch_labels = None
depends_on = None

_TABLE = "soap_credentials"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("previous_secret_encrypted", sa.LargeBinary(), nullable=True))
    op.add_column(
        _TABLE, sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # the previous passwords are dropped: after a downgrade only the current ones work
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("previous_expires_at")
        batch.drop_column("previous_secret_encrypted")
