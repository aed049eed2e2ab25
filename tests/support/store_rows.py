"""Rows the migration tests write straight into the Message Store's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def pending_delivery(message_pk: int, at: datetime) -> dict[str, Any]:
    """A pending delivery to 固定資産税 (kotei) of message ``message_pk``, due ``at``."""
    return {
        "message_pk": message_pk,
        "destination": "kotei",
        "tenant": "412066",
        "subject_key": "",
        "sequence": 1,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }
