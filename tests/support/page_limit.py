"""A full store, honestly and portably: SQLite's own ``PRAGMA max_page_count`` on every
connection the hub's pool hands out (SQLAlchemy's public pool events), so writes beyond the
pages the database has fail with a real SQLITE_FULL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from bus.hub import Hub


class PageLimit:
    """``PRAGMA max_page_count`` applied to every connection the hub's pool hands out."""

    def __init__(self, hub: Hub) -> None:
        self.limit: int | None = None
        self.engine = hub.store.engine
        event.listen(self.engine, "checkout", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count = {self.limit or 1_073_741_823}")
        cursor.close()

    def freeze(self) -> None:
        """No page beyond those the database has now."""
        with self.engine.connect() as connection:
            self.limit = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())

    def lift(self) -> None:
        self.limit = None

    def remove(self) -> None:
        event.remove(self.engine, "checkout", self._apply)
        self.engine.dispose()  # pooled connections keep their limit: new ones have none
