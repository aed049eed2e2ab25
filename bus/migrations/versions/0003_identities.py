"""Identities: issued API keys, operator accounts, WS-Security secrets, the nonce cache and
rate-limit windows (docs/security.md).

Revision ID: 0003_identities
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_identities"
down_revision = "0002"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("system", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=160), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("expires_at", _WHEN, nullable=True),
        sa.Column("revoked_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    op.create_index(op.f("ix_api_keys_system"), "api_keys", ["system"], unique=False)
    op.create_table(
        "operator_accounts",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=160), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("password_changed_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_operator_accounts")),
    )
    op.create_table(
        "soap_credentials",
        sa.Column("system", sa.String(length=40), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("changed_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("system", name=op.f("pk_soap_credentials")),
        sa.UniqueConstraint("username", name=op.f("uq_soap_credentials_username")),
    )
    op.create_table(
        "used_nonces",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("username", "nonce", name=op.f("pk_used_nonces")),
    )
    op.create_index(op.f("ix_used_nonces_expires_at"), "used_nonces", ["expires_at"])
    op.create_table(
        "rate_windows",
        sa.Column("system", sa.String(length=40), nullable=False),
        sa.Column("unit", sa.String(length=1), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("system", "unit", "window_start", name=op.f("pk_rate_windows")),
    )


def downgrade() -> None:
    op.drop_table("rate_windows")
    op.drop_index(op.f("ix_used_nonces_expires_at"), table_name="used_nonces")
    op.drop_table("used_nonces")
    op.drop_table("soap_credentials")
    op.drop_table("operator_accounts")
    op.drop_index(op.f("ix_api_keys_system"), table_name="api_keys")
    op.drop_table("api_keys")
