"""The resident index (宛名索引) owner matching reads: normalised keys only, per tenant.

Fed by the 住民異動通知 (ResidentChangeNotice) messages already in the hub's Message Store
(incrementally, by stored id) and, for the first full load and for corporations and 住登外者,
by a 宛名 extract CSV. Matching a million notices is then local look-ups, not a million
宛名照会 round trips (see docs/batch-import.md for the choice).
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bus.catalogue import NS_STANDARD
from bus.imports.normalize import address_key, corporation, kana_key, name_key
from bus.store.models import StoredMessage

SCHEMA = """
create table if not exists residents (
  tenant text not null, addressee_number text not null, name_key text, kana_key text,
  address_key text, resident_type text, resident_status text, corporate_number text,
  corporate_key text, corporate_bare text, primary key (tenant, addressee_number));
create index if not exists ix_name on residents (tenant, name_key);
create index if not exists ix_kana on residents (tenant, kana_key);
create index if not exists ix_corp on residents (tenant, corporate_number);
create index if not exists ix_corp_bare on residents (tenant, corporate_bare);
create table if not exists feeds (tenant text primary key, last_message integer not null);
"""
EXTRACT_COLUMNS = ("宛名番号", "氏名", "氏名カナ", "住所", "住民種別", "住民状態", "法人番号")


@dataclass(frozen=True, slots=True)
class Resident:
    """One 宛名 as the index holds it (keys, not the names themselves)."""

    addressee_number: str
    name_key: str
    kana_key: str
    address_key: str
    resident_type: str  # 1 日本人住民, 2 外国人住民, 3 住登外者
    resident_status: str  # 1 住民 … 3–5 消除
    corporate_number: str
    corporate_key: str
    corporate_bare: str


def resident(
    addressee_number: str,
    name: str,
    kana: str = "",
    address: str = "",
    resident_type: str = "1",
    resident_status: str = "1",
    corporate_number: str = "",
) -> Resident:
    corp = corporation(name)
    return Resident(
        addressee_number,
        name_key(name),
        kana_key(kana),
        address_key(address),
        resident_type,
        resident_status,
        corporate_number or (corp.number or "" if corp else ""),
        corp.key if corp else "",
        corp.bare if corp else "",
    )


class ResidentIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put(self, tenant: str, residents: Iterable[Resident]) -> int:
        rows = [(tenant, *vars_of(r)) for r in residents]
        with self._db:
            self._db.executemany(
                "insert or replace into residents values (?,?,?,?,?,?,?,?,?,?)", rows
            )
        return len(rows)

    def count(self, tenant: str) -> int:
        row = self._db.execute("select count(*) from residents where tenant = ?", (tenant,))
        return int(row.fetchone()[0])

    def find(self, tenant: str, column: str, value: str) -> list[Resident]:
        if not value:
            return []
        assert column in ("name_key", "kana_key", "corporate_number", "corporate_bare")
        rows = self._db.execute(
            f"select * from residents where tenant = ? and {column} = ?", (tenant, value)
        )
        return [Resident(*row[1:]) for row in rows]

    # --- feeds ------------------------------------------------------------------------------

    def refresh(self, sessions: sessionmaker[Session], tenant: str) -> int:
        """Read the 住民異動通知 stored since the last refresh; returns how many."""
        row = self._db.execute("select last_message from feeds where tenant = ?", (tenant,))
        found = row.fetchone()
        last = int(found[0]) if found else 0
        count = 0
        with sessions() as session:
            query = (
                select(StoredMessage.id, StoredMessage.body)
                .where(StoredMessage.tenant == tenant)
                .where(StoredMessage.service == "ResidentChangeNotice")
                .where(StoredMessage.id > last)
                .order_by(StoredMessage.id)
                .execution_options(yield_per=1000)
            )
            batch: list[Resident] = []
            for message_pk, body in session.execute(query):
                batch.append(_from_notice(body))
                last = message_pk
                if len(batch) >= 1000:
                    count += self.put(tenant, batch)
                    batch = []
            count += self.put(tenant, batch)
        with self._db:
            self._db.execute("insert or replace into feeds values (?, ?)", (tenant, last))
        return count

    def load_extract(self, path: Path, tenant: str) -> int:
        """A 宛名 extract (UTF-8 CSV, header ``EXTRACT_COLUMNS``): the full load."""
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return self.put(tenant, _extract_rows(csv.DictReader(handle)))


def vars_of(entry: Resident) -> tuple[str, ...]:
    return (
        entry.addressee_number, entry.name_key, entry.kana_key, entry.address_key,
        entry.resident_type, entry.resident_status, entry.corporate_number,
        entry.corporate_key, entry.corporate_bare,
    )  # fmt: skip


def _extract_rows(rows: Iterable[dict[str, str]]) -> Iterator[Resident]:
    for row in rows:
        yield resident(
            row["宛名番号"],
            row["氏名"],
            row.get("氏名カナ") or "",
            row.get("住所") or "",
            row.get("住民種別") or "1",
            row.get("住民状態") or "1",
            row.get("法人番号") or "",
        )


def _from_notice(body: bytes) -> Resident:
    root = etree.fromstring(body)

    def text(name: str) -> str:
        return root.findtext(f".//{{{NS_STANDARD}}}{name}") or ""

    return resident(
        text("addresseeNumber"),
        text("name"),
        text("nameKana"),
        text("address"),
        text("residentType") or "1",
        text("residentStatus") or "1",
    )
