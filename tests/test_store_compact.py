"""``renkei store compact``: the room ``renkei purge`` frees inside an embedded store goes
back to the disk — in short steps beside a running hub for a store in incremental mode
(every store created now), by a one-off rebuild with the hub stopped for an older one
(docs/operations.md, 保存期間と領域の回収)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.settings import Settings
from bus.store.admin_audit import admin_records
from bus.store.compact import CompactRefused, check_room, compact, space
from bus.store.db import open_store
from bus.store.retention import purge
from bus.store.transfer import processes_holding
from tests.support.expired import insert_expired
from tests.support.file_holder import holding_open

MESSAGES = 400  # of 4 KiB: about 2 MB of pages freed by the purge


def _fill(settings: Settings, count: int = MESSAGES) -> None:
    """``count`` expired messages, their deliveries delivered."""
    store = open_store(settings)
    try:
        with store.sessions.begin() as session:
            insert_expired(session, count, body=lambda n: bytes([n % 251]) * 4096)
        assert purge(store.sessions).messages == count
    finally:
        store.close()


def _make_old_style(database: Path) -> None:
    """The file as a store created before 2026-11-29 has it: auto_vacuum off."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA auto_vacuum=NONE")
        connection.execute("VACUUM")
    finally:
        connection.close()


def _renkei(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"RENKEI_DATA_DIR": str(settings.data_dir)}
    done = CliRunner().invoke(app, list(args), env=env)
    return done.exit_code, done.stdout, done.stderr


def test_a_new_store_gives_purged_room_back_in_steps(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _fill(settings)
    store = open_store(settings)
    database = tmp_path / "renkei.db"
    try:
        found = space(store.engine)
        assert found is not None and found.auto_vacuum == "incremental"
        assert found.reclaimable > 1_500_000  # the purge left its pages free in the file
        report = compact(store.engine, actor="cli:test", holders=processes_holding)
        after = space(store.engine)
        with store.sessions() as session:
            records = admin_records(session, action="store.compact")
    finally:
        store.close()
    assert report.method == "incremental" and report.steps >= 1
    assert after is not None and after.free_pages == 0
    assert database.stat().st_size < found.pages * found.page_size - 1_500_000
    assert [r.detail["method"] for r in records] == ["incremental"]
    assert records[0].detail["bytes_reclaimed"] > 1_500_000


def test_an_older_store_is_rebuilt_once_in_incremental_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _fill(settings)
    database = tmp_path / "renkei.db"
    _make_old_style(database)  # VACUUM gave this one its room back: purge again to free some
    _fill(settings, 200)
    size = database.stat().st_size
    code, out, err = _renkei(settings, "store", "compact")
    assert code == 0, err
    assert "作り直し rebuild" in err and out.startswith("compacted (rebuild): ")
    assert database.stat().st_size < size - 700_000
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()
    assert not (tmp_path / "renkei.db.compact").exists()
    store = open_store(settings)  # still a renkei store, its admin chain carried over
    try:
        with store.sessions() as session:
            assert [r.event for r in admin_records(session, action="store")] == ["store.compact"]
    finally:
        store.close()


def test_rebuilding_a_store_another_process_has_open_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _fill(settings, 50)
    database = tmp_path / "renkei.db"
    _make_old_style(database)
    before = database.read_bytes()
    with holding_open(database) as holder:
        code, _, err = _renkei(settings, "store", "compact")
    assert code == 1
    assert "RK-OPS030 " in err and str(holder) in err
    assert database.read_bytes() == before  # nothing changed


def test_a_rebuild_without_the_room_for_it_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CompactRefused) as refused:
        check_room(tmp_path, 1 << 62)
    assert refused.value.finding.code == "RK-OPS031"
    check_room(tmp_path, 1)


def test_purge_tells_how_much_room_compact_would_give_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)
    try:
        with store.sessions.begin() as session:
            insert_expired(session, 100, body=lambda n: bytes(4096), destinations=())
    finally:
        store.close()
    code, out, err = _renkei(settings, "purge")
    assert code == 0 and out.startswith("purged 100 message(s)")
    assert "ストア内の空き free in the store: " in err and "renkei store compact" in err
