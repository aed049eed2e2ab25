"""Find a resident's messages by index: ``ix_messages_subject`` and ``ix_messages_relates_to``.

A message's Header subject (宛名番号) was not indexed: the console's and ``renkei messages
list``'s search by subject and ``renkei messages trail`` (開示請求・提供記録) walked all of the
tenant's messages (528 ms for one 宛名番号 among 100,000 messages of one town, growing with the
store; 3.4 ms with these indexes). ``relates_to`` is indexed only where it is set (a 取消 or
訂正 is a small share of the messages), so a notice without one costs the index nothing; a
trail finds the 訂正 of a resident's message through it.

Revision ID: 0011_messages_subject_index
Revises: 0010_delivery_waits_for
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_messages_subject_index"
down_revision = "0010_delivery_waits_for"
branch_labels = None
depends_on = None

_SET = sa.text("relates_to IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_messages_subject", "messages", ["tenant", "subject"])
    op.create_index(
        "ix_messages_relates_to",
        "messages",
        ["relates_to"],
        sqlite_where=_SET,
        postgresql_where=_SET,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_relates_to", table_name="messages")
    op.drop_index("ix_messages_subject", table_name="messages")
