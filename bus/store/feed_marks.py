"""Purge marks for PULL feeds: retention records, per (tenant, service), the highest primary
key it purged, so a feed reader whose cursor lies before it is told (RK-FED003) instead of
silently missing messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from bus.store.models import FeedMark, StoredMessage
from bus.store.sequences import upsert_insert

_MARKS = cast(Table, FeedMark.__table__)


def advance_marks(session: Session, purged: Sequence[int]) -> None:
    """Raise the marks of the streams the messages ``purged`` (about to be deleted, in the
    caller's transaction) belong to."""
    if not purged:
        return
    highest = session.execute(
        select(StoredMessage.tenant, StoredMessage.service, func.max(StoredMessage.id))
        .where(StoredMessage.id.in_(purged))
        .group_by(StoredMessage.tenant, StoredMessage.service)
    ).all()
    insert = upsert_insert(session)
    for tenant, service, pk in highest:
        statement = insert(_MARKS).values(tenant=tenant, service=service, purged_through=pk)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[_MARKS.c.tenant, _MARKS.c.service],
                set_={
                    "purged_through": func.max(
                        _MARKS.c.purged_through, statement.excluded.purged_through
                    )
                    if session.get_bind().dialect.name == "sqlite"
                    else func.greatest(_MARKS.c.purged_through, statement.excluded.purged_through)
                },
            )
        )
