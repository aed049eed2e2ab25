"""The message search a page at a time, in the store's order (newest first, then the key).

Each page starts after the last row of the one before (keyset pagination, not OFFSET): a page
deep in a large store costs what the first does, and messages arriving in the meantime shift
nothing. The cursor in a "next" link is that row's receipt (microseconds since the epoch, UTC)
and its key — neither is personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from adapters.console.session import ConsoleRefusal
from bus.errors import make_finding
from bus.store.audit import utc
from bus.store.queries import MessageSummary, page_messages

PAGE_SIZE = 100
CURSOR = "after"  # the query parameter of a "next" link
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TOKEN = re.compile(r"^(-?[0-9]{1,18})\.([0-9]{1,18})$")


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row of a page: the next page holds the rows after it in the store's order."""

    received_at: datetime
    pk: int

    def token(self) -> str:
        micros = (utc(self.received_at) - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.pk}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """RK-CON001 when the link was altered (it is only ever one the console wrote)."""
        found = _TOKEN.fullmatch(token)
        try:
            if found is None:
                raise ValueError(token)
            moment = _EPOCH + timedelta(microseconds=int(found[1]))
        except (ValueError, OverflowError):
            raise ConsoleRefusal(400, make_finding("RK-CON001", path=f"/{CURSOR}")) from None
        return cls(moment, int(found[2]))


@dataclass(frozen=True, slots=True)
class SearchPage:
    found: list[MessageSummary]
    next: Cursor | None  # None: this is the last page


def search_messages(
    session: Session, *, after: Cursor | None = None, limit: int = PAGE_SIZE, **filters: Any
) -> SearchPage:
    """One page of the matches (``filters`` as :func:`bus.store.queries.page_messages` takes
    them), after ``after``."""
    key = (after.received_at, after.pk) if after else None
    found, last = page_messages(session, after=key, limit=limit, **filters)
    return SearchPage(found, Cursor(*last) if last else None)
