"""Messages past their retention, written straight into the store's tables (fast: thousands
in one statement), for the purge and compaction tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bus.store.models import Delivery, StoredMessage


def insert_expired(
    session: Session,
    count: int,
    *,
    body: Callable[[int], bytes],
    destinations: tuple[str, ...] = ("zeimu",),
    received: datetime = datetime(2021, 4, 1, tzinfo=UTC),
) -> None:
    """``count`` messages of 414247 received at ``received`` and expired a year later, each
    delivered to every one of ``destinations``; ``body(n)``: the n-th message's body."""
    session.execute(
        insert(StoredMessage),
        [
            {
                "message_id": f"00000000-0000-4000-8000-{n:012d}",
                "tenant": "414247",
                "system": "juki",
                "service": "ResidentChangeNotice",
                "kind": "notification",
                "subject": f"{n:015d}",
                "body": body(n),
                "body_digest": "0" * 64,
                "received_at": received,
                "expires_at": received + timedelta(days=365),
            }
            for n in range(count)
        ],
    )
    if not destinations:
        return
    pks = session.execute(select(StoredMessage.id)).scalars().all()
    session.execute(
        insert(Delivery),
        [
            {
                "message_pk": pk,
                "destination": destination,
                "tenant": "414247",
                "subject_key": f"{pk:015d}",
                "sequence": 1,
                "state": "delivered",
                "attempts": 1,
                "next_attempt_at": received,
                "created_at": received,
            }
            for pk in pks
            for destination in destinations
        ],
    )
