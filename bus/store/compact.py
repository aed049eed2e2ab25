"""``renkei store compact``: give the disk back the room ``renkei purge`` freed in an embedded
store (docs/operations.md, 保存期間と領域の回収).

A SQLite file never shrinks by itself: a purge leaves its pages free inside ``renkei.db`` for
later writes (measured: 90,000 of 100,000 messages of ~4 KB purged, the 577 MB file kept its
size with 85 % of its pages free). Two ways back, chosen by the file's ``auto_vacuum`` mode:

- **incremental** (every store created since 2026-11-29, and every store compacted once):
  the free pages are moved to the end of the file and cut off in short steps of
  about 0.1 s, one write transaction each, beside a running hub (measured: 484 MB given back
  in 10.9 s beside ingest, no message stored later than 0.24 s, the log at most 6.1 MB).
- **none** (a store created before): the file must be rebuilt once, and the hub stopped for
  it: ``VACUUM INTO`` a new file beside it, in incremental mode, then the new file takes the
  old one's name (measured: 577 MB → 83 MB in 1.8 s). It needs free disk about the size of
  what the store still holds (not of the file); refused beforehand (RK-OPS031) when there is
  less, and refused (RK-OPS030) while a process has the store open. An in-place ``VACUUM``
  was not used: in WAL mode it writes the whole rebuilt database to the log as well as to a
  temporary file (measured: a 546 MB log for a 569 MB store), twice the room.

PostgreSQL: nothing to rebuild here — ``VACUUM`` (autovacuum, or this command) makes the
room purged rows held reusable by later rows without locking writers out; only ``VACUUM
FULL`` (an exclusive lock on each table for its whole rewrite) gives it back to the disk.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.store.admin_audit import record_admin_action
from bus.store.db import session_factory

#: Pages the first online step moves and cuts off. The time a page takes varies a lot (on a
#: 570 MB store 256 pages held the write lock for 0.03-1.4 s, 2,048 pages for 3-5 s), so
#: each next step is sized from the last one's time to hold the lock about
#: :data:`STEP_TARGET_S`, between :data:`STEP_MIN_PAGES` and :data:`STEP_MAX_PAGES`.
STEP_PAGES = 64
STEP_MIN_PAGES, STEP_MAX_PAGES = 16, 1024
STEP_TARGET_S = 0.1
#: Seconds between two steps, for the hub's writers and for the log to start again.
STEP_PAUSE = 0.05
#: Room kept free beyond the rebuilt file's size (its indexes may come out a little larger).
ROOM_MARGIN = 1.1
ROOM_SLACK_BYTES = 16 * 1024 * 1024
_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}
#: The tables ``renkei purge`` deletes from (PostgreSQL: vacuumed by this command).
PURGED_TABLES = ("messages", "deliveries", "delivery_attempts", "idempotency_keys")


class CompactRefused(Exception):
    """Nothing was changed; ``finding`` says why (RK-OPS030, RK-OPS031)."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        super().__init__(f"{finding.code} {finding.message_en}")


@dataclass(frozen=True, slots=True)
class StoreSpace:
    """An embedded store's pages: how many, how many of them free, in which vacuum mode."""

    page_size: int
    pages: int
    free_pages: int
    auto_vacuum: str

    @property
    def reclaimable(self) -> int:
        return self.free_pages * self.page_size

    @property
    def used(self) -> int:
        return (self.pages - self.free_pages) * self.page_size


@dataclass(frozen=True, slots=True)
class CompactReport:
    method: str  # incremental | rebuild | vacuum (PostgreSQL)
    bytes_before: int
    bytes_after: int
    seconds: float
    steps: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "bytes_reclaimed": max(0, self.bytes_before - self.bytes_after),
            "seconds": round(self.seconds, 2),
            "steps": self.steps,
        }


def sqlite_file(engine: Engine) -> Path | None:
    """The store's SQLite file; None on PostgreSQL (or an in-memory SQLite)."""
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def space(engine: Engine) -> StoreSpace | None:
    """The embedded store's pages (None on PostgreSQL): what ``renkei purge`` reports as
    reclaimable."""
    if sqlite_file(engine) is None:
        return None
    with engine.connect() as connection:

        def pragma(name: str) -> int:
            return int(connection.exec_driver_sql(f"PRAGMA {name}").scalar_one())

        mode = pragma("auto_vacuum")
        return StoreSpace(
            pragma("page_size"),
            pragma("page_count"),
            pragma("freelist_count"),
            _AUTO_VACUUM.get(mode, str(mode)),
        )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def compact(
    engine: Engine,
    *,
    actor: str | None,
    holders: Callable[[Path], list[int]],
) -> CompactReport:
    """Give back the free room of the store behind ``engine`` (see the module's text);
    ``holders`` lists the other processes that have a SQLite file open. The admin chain gets
    one ``store.compact`` record."""
    path = sqlite_file(engine)
    started = time.monotonic()
    if path is None:
        report = _vacuum_postgresql(engine, started)
    else:
        found = space(engine)
        assert found is not None
        if found.auto_vacuum == "incremental":
            report = _incremental(engine, path, found, started)
        else:
            report = _rebuild(engine, path, found, started, holders)
    with session_factory(engine).begin() as session:
        record_admin_action(session, actor, "store.compact", report.as_json())
    return report


def _incremental(
    engine: Engine,
    path: Path,
    found: StoreSpace,
    started: float,
) -> CompactReport:
    """``PRAGMA incremental_vacuum`` in steps (:data:`STEP_TARGET_S` each), each in its own
    ``BEGIN IMMEDIATE`` transaction, a pause and a passive checkpoint (which cuts the file)
    between them."""
    before = _size(path)
    steps = 0
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        left, pages = found.free_pages, STEP_PAGES
        while left > 0:
            began = time.monotonic()
            # executescript steps the pragma to its end: execute() would free one page only
            # (Python's sqlite3 stops after the first step of a statement without columns)
            driver.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({pages}); COMMIT;")
            steps += 1
            took = max(time.monotonic() - began, 0.001)
            pages = min(STEP_MAX_PAGES, max(STEP_MIN_PAGES, int(pages * STEP_TARGET_S / took)))
            now_left = int(driver.execute("PRAGMA freelist_count").fetchone()[0])
            if now_left >= left:  # nothing moved (another writer took the pages meanwhile)
                break
            left = now_left
            time.sleep(STEP_PAUSE)
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
        driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        raw.close()
    return CompactReport("incremental", before, _size(path), time.monotonic() - started, steps)


def check_room(directory: Path, needed: int) -> None:
    """Refuse (RK-OPS031) when ``directory``'s filesystem has less than ``needed`` bytes free."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        mib = 1024 * 1024
        raise CompactRefused(
            make_finding(
                "RK-OPS031",
                path="/database",
                actual=str(directory),
                needed=f"{-(-needed // mib):,} MiB",
                free=f"{free // mib:,} MiB",
            )
        )


def room_needed(found: StoreSpace) -> int:
    """Free disk a rebuild needs: what the store holds, with a margin."""
    return int(found.used * ROOM_MARGIN) + ROOM_SLACK_BYTES


def _rebuild(
    engine: Engine,
    path: Path,
    found: StoreSpace,
    started: float,
    holders: Callable[[Path], list[int]],
) -> CompactReport:
    """``VACUUM INTO`` a new file in incremental mode, then put it in the old one's place
    (the hub stopped: refused otherwise)."""
    engine.dispose()  # this process's own pooled connections are not "another process"
    _refuse_held(path, holders)
    check_room(path.parent, room_needed(found))
    before = _size(path) + _size(Path(f"{path}-wal"))
    target = path.with_name(f"{path.name}.compact")
    target.unlink(missing_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        try:
            connection.execute("BEGIN IMMEDIATE")  # no writer of its own meanwhile
            connection.execute("ROLLBACK")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as error:
            raise CompactRefused(
                make_finding("RK-OPS030", path="/database", actual=str(path), holders=str(error))
            ) from None
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")  # the rebuilt file's mode
        connection.execute("VACUUM INTO ?", (str(target),))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        connection.close()  # the last connection: the log is checkpointed and removed
    try:
        _check_rebuilt(target)
        _refuse_held(path, holders)  # a hub started meanwhile would write to the old file
        if Path(f"{path}-wal").exists() and _size(Path(f"{path}-wal")) > 0:
            raise CompactRefused(
                make_finding(
                    "RK-OPS030", path="/database", actual=str(path), holders="write-ahead log"
                )
            )
        mode = path.stat()
        os.chmod(target, mode.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(target, mode.st_uid, mode.st_gid)
        with target.open("rb") as handle:
            os.fsync(handle.fileno())
        for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        os.replace(target, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return CompactReport("rebuild", before, _size(path), time.monotonic() - started)


def _refuse_held(path: Path, holders: Callable[[Path], list[int]]) -> None:
    held = holders(path)
    if held:
        listed = ", ".join(str(pid) for pid in held[:5])
        raise CompactRefused(
            make_finding(
                "RK-OPS030", path="/database", actual=str(path), holders=f"process id {listed}"
            )
        )


def _check_rebuilt(target: Path) -> None:
    connection = sqlite3.connect(target, isolation_level=None)
    try:
        result = connection.execute("PRAGMA quick_check").fetchone()[0]
        mode = connection.execute("PRAGMA auto_vacuum").fetchone()[0]
    finally:
        connection.close()
    if result != "ok" or mode != 2:
        raise RuntimeError(f"rebuilt store failed its check: {result}, auto_vacuum={mode}")


def _relation_bytes(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                    " WHERE c.relname = ANY(:names) AND c.relkind = 'r'"
                    " AND pg_table_is_visible(c.oid)"
                ),
                {"names": list(PURGED_TABLES)},
            ).scalar_one()
        )


def _vacuum_postgresql(engine: Engine, started: float) -> CompactReport:
    """Plain ``VACUUM (ANALYZE)`` of the purged tables (outside a transaction, as it must be):
    their dead rows' room becomes reusable now instead of at autovacuum's next pass; writers
    are not locked out."""
    before = _relation_bytes(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("SET lock_timeout = 0")
        for table in PURGED_TABLES:
            connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
    return CompactReport("vacuum", before, _relation_bytes(engine), time.monotonic() - started)
