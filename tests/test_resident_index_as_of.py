"""The resident index keeps the newer of what an extract and a 住民異動通知 say of one 宛名: an
extract is true as of when it was written (its file's modification time), a notice as of when
the hub stored it. A 宛名 extract loaded to put the index right again must not be undone by the
older notices the next feed read (or a rebuild's full re-read) stores over it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from bus.hub import Hub
from bus.imports.normalize import address_key, name_key
from bus.imports.residents import ResidentIndex, resident
from bus.settings import Settings
from tests.test_qa_resident_index_version import TENANT, _store_resident_change_notice

STORED = "佐賀県武雄市武雄町大字富岡1234番地"  # what the stored notice says
EXTRACTED = "佐賀県武雄市北方町大字志久5番地"  # what the extract says


def _extract(folder: Path, number: str, written: float) -> Path:
    path = folder / "residents.csv"
    path.write_text(f"宛名番号,氏名,住所\n{number},高橋　一郎,{EXTRACTED}\n", encoding="utf-8")
    os.utime(path, (written, written))
    return path


def _address_after_load_and_feed(data: Path, index: ResidentIndex, extract: Path) -> str:
    hub = Hub.open(Settings(data_dir=data))
    try:
        index.load_extract(extract, TENANT)
        index.refresh(hub.store.sessions, TENANT)
    finally:
        hub.close()
    [found] = index.find(TENANT, "name_key", name_key("高橋　一郎"))
    return found.address_key


@pytest.mark.parametrize(("written", "kept"), [(+3600, EXTRACTED), (-3600, STORED)])
def test_the_newer_of_extract_and_stored_notice_is_kept(
    tmp_path: Path, written: float, kept: str
) -> None:
    data = tmp_path / "data"
    number = _store_resident_change_notice(data, STORED)  # stored now
    extract = _extract(tmp_path, number, time.time() + written)
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        assert _address_after_load_and_feed(data, index, extract) == address_key(kept)
    finally:
        index.close()


def test_a_newer_extract_survives_a_rebuilds_full_re_read(tmp_path: Path) -> None:
    """An outdated tenant is rebuilt from the extract and every stored notice is read again:
    the older notice adds nothing over the extract's row."""
    data = tmp_path / "data"
    number = _store_resident_change_notice(data, STORED)
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        index.put(TENANT, [resident("9", "佐藤　花子")])
        with sqlite3.connect(index.path) as db:  # an older renkei's keys: outdated
            db.execute("update key_versions set version = 0 where tenant = ?", (TENANT,))
        assert index.outdated(TENANT) == 0
        extract = _extract(tmp_path, number, time.time() + 3600)
        assert _address_after_load_and_feed(data, index, extract) == address_key(EXTRACTED)
        assert index.outdated(TENANT) is None
    finally:
        index.close()


def test_an_index_made_before_rows_were_dated_is_given_the_date(tmp_path: Path) -> None:
    path = tmp_path / "residents.sqlite"
    with sqlite3.connect(path) as db:  # the table as an earlier renkei made it
        db.execute(
            "create table residents (tenant text not null, addressee_number text not null,"
            " name_key text, kana_key text, address_key text, resident_type text,"
            " resident_status text, corporate_number text, corporate_key text,"
            " corporate_bare text, primary key (tenant, addressee_number))"
        )
        db.execute(
            "insert into residents values (?, '1', ?, '', ?, '1', '1', '', '', '')",
            (TENANT, name_key("高橋　一郎"), address_key(STORED)),
        )
    index = ResidentIndex(path)
    try:
        assert index.unreadable is None
        [old] = index.find(TENANT, "name_key", name_key("高橋　一郎"))
        assert old.address_key == address_key(STORED)
        index.put(TENANT, [resident("1", "高橋　一郎", "", EXTRACTED)], as_of=1.0)
        [new] = index.find(TENANT, "name_key", name_key("高橋　一郎"))
        assert new.address_key == address_key(EXTRACTED)  # undated rows are the oldest
    finally:
        index.close()
