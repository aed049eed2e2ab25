"""The resident index (宛名索引) owner matching reads: normalised keys only, per tenant.

Fed by the 住民異動通知 (ResidentChangeNotice) messages already in the hub's Message Store
(incrementally, by stored id) and, for the first full load and for corporations and 住登外者,
by a 宛名 extract CSV. Matching a million notices is then local look-ups, not a million
宛名照会 round trips (see docs/batch-import.md for the choice). An index file that is not a
database (overwritten), or one damaged past its header (cut short, garbled pages: SQLite's
``quick_check`` when it is opened, or any read that fails later), is
:attr:`ResidentIndex.unreadable`: it holds nobody, so owners are 未照合 and the import goes on,
but an extract is refused rather than loaded into it.

The keys are what :mod:`bus.imports.normalize` made of the names when they were stored: each
tenant's rows carry the :data:`KEY_VERSION` they were made with. A tenant whose rows are
older (:meth:`ResidentIndex.outdated`) still matches, only missing owners whose keys are now
made otherwise; loading an extract into it rebuilds that tenant's rows.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bus.catalogue import NS_STANDARD
from bus.errors import make_finding
from bus.imports.encoding import UTF8, detect_encoding
from bus.imports.normalize import address_key, corporation, kana_key, name_key
from bus.mapping.text import to_half_width
from bus.masking import mask
from bus.pipeline import Finding
from bus.store.models import StoredMessage

SCHEMA = """
create table if not exists residents (
  tenant text not null, addressee_number text not null, name_key text, kana_key text,
  address_key text, resident_type text, resident_status text, corporate_number text,
  corporate_key text, corporate_bare text, as_of real not null default 0,
  primary key (tenant, addressee_number));
create index if not exists ix_name on residents (tenant, name_key);
create index if not exists ix_kana on residents (tenant, kana_key);
create index if not exists ix_corp on residents (tenant, corporate_number);
create index if not exists ix_corp_bare on residents (tenant, corporate_bare);
create table if not exists feeds (tenant text primary key, last_message integer not null);
create table if not exists key_versions (tenant text primary key, version integer not null);
"""
# What the keys are: bump it with any change to what name_key, kana_key, address_key or
# corporation give for a name already stored (normalize.py says so at its keys). A tenant's
# rows stored with an older version, or before versions were kept (none), are outdated.
# 1: corporate forms ㈳ ㈶ (福) (医) NPO法人, a 大字 ending like a prefecture or 郡 kept.
# 2: variation selectors (IVS) dropped from names and addresses.
KEY_VERSION = 2
EXTRACT_COLUMNS = ("宛名番号", "氏名", "氏名カナ", "住所", "住民種別", "住民状態", "法人番号")
REQUIRED_COLUMNS = ("宛名番号", "氏名")  # the others may be missing or empty
_SHOWN_AS_IS = 2  # a cell this short is a (wrong) code or word such as 消除, not a full name
# a row's columns (as_of: when what it says was true, epoch seconds; the newer writer wins)
COLUMNS = (
    "addressee_number, name_key, kana_key, address_key, resident_type, resident_status,"
    " corporate_number, corporate_key, corporate_bare"
)
_UPSERT = f"""
insert into residents (tenant, {COLUMNS}, as_of) values (?,?,?,?,?,?,?,?,?,?,?)
on conflict (tenant, addressee_number) do update set
  name_key = excluded.name_key, kana_key = excluded.kana_key,
  address_key = excluded.address_key, resident_type = excluded.resident_type,
  resident_status = excluded.resident_status, corporate_number = excluded.corporate_number,
  corporate_key = excluded.corporate_key, corporate_bare = excluded.corporate_bare,
  as_of = excluded.as_of
where excluded.as_of >= residents.as_of"""
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)  # a damaged file, not a busy one
_TEXT = {UTF8: "utf-8-sig"}  # a detected encoding → the codec reading it (a BOM or none)


class ExtractRefused(Exception):
    """A 宛名 extract that cannot be loaded (unreadable, wrong header, damaged index); nothing
    of it was loaded. Carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


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
        self.unreadable: str | None = None  # why the file is no index, when it is not
        try:
            self._db.executescript(SCHEMA)
            self._add_as_of()
            # the header and schema may read while pages past them are cut off or garbled:
            # every page's structure checked once (~0.1 s for 300,000 宛名), not per look-up
            found = self._db.execute("pragma quick_check(1)").fetchone()
            if found is None or found[0] != "ok":
                self.unreadable = f"quick_check: {found[0] if found else 'no answer'}"
        except sqlite3.DatabaseError as error:  # e.g. "file is not a database"
            self.unreadable = str(error)

    def close(self) -> None:
        self._db.close()

    def _add_as_of(self) -> None:
        """An index made before rows were dated: its rows date from 0, older than anything."""
        columns = {row[1] for row in self._db.execute("pragma table_info(residents)")}
        if "as_of" in columns:
            return
        try:
            with self._db:
                self._db.execute("alter table residents add column as_of real not null default 0")
        except sqlite3.OperationalError as error:  # another process added it meanwhile
            if "duplicate column" not in str(error):
                raise

    def damaged(self, error: sqlite3.DatabaseError) -> None:
        """A read or write failed: on a damaged index (cut short, garbled), from now on it
        holds nobody; anything else (a lock held too long) is raised as it was."""
        if (getattr(error, "sqlite_errorcode", 0) & 0xFF) not in _DAMAGED:
            raise error
        self.unreadable = self.unreadable or str(error)

    def put(
        self,
        tenant: str,
        residents: Iterable[Resident],
        rebuild: bool = False,
        as_of: float | None = None,
    ) -> int:
        """Add or replace (by 宛名番号) the tenant's residents in one transaction, as true at
        ``as_of`` (epoch seconds; default now): a row already stored as true later is kept.
        A tenant with no rows yet is marked with the current :data:`KEY_VERSION`; ``rebuild``:
        the tenant's rows are replaced by these (and its feed read again from the first
        stored 住民異動通知), so they are marked current too."""
        when = time.time() if as_of is None else as_of
        return self._put(tenant, [(r, when) for r in residents], rebuild)

    def _put(self, tenant: str, dated: list[tuple[Resident, float]], rebuild: bool) -> int:
        rows = [(tenant, *vars_of(r), when) for r, when in dated]
        try:
            with self._db:
                if rebuild:
                    self._db.execute("delete from residents where tenant = ?", (tenant,))
                    self._db.execute("delete from feeds where tenant = ?", (tenant,))
                    self._db.execute("delete from key_versions where tenant = ?", (tenant,))
                if not self._has_rows(tenant):
                    self._db.execute(
                        "insert or replace into key_versions values (?, ?)", (tenant, KEY_VERSION)
                    )
                self._db.executemany(_UPSERT, rows)
        except sqlite3.DatabaseError as error:
            self.damaged(error)  # raises what is not damage
            raise
        return len(rows)

    def _has_rows(self, tenant: str) -> bool:
        row = self._db.execute("select 1 from residents where tenant = ? limit 1", (tenant,))
        return row.fetchone() is not None

    def outdated(self, tenant: str) -> int | None:
        """The :data:`KEY_VERSION` the tenant's rows were stored with (0: before versions
        were kept) when it is older than the current one; None when they are current, or
        there are none (nor any for an unreadable index)."""
        if self.unreadable is not None:
            return None
        try:
            if not self._has_rows(tenant):
                return None
            row = self._db.execute("select version from key_versions where tenant = ?", (tenant,))
            found = row.fetchone()
        except sqlite3.DatabaseError as error:
            self.damaged(error)
            return None
        version = int(found[0]) if found else 0
        return version if version < KEY_VERSION else None

    def outdated_warning(self, tenant: str) -> Finding | None:
        """RK-IMP017 for a tenant whose rows are :meth:`outdated`, naming how to rebuild."""
        version = self.outdated(tenant)
        if version is None:
            return None
        return make_finding(
            "RK-IMP017",
            path="/residents",
            actual=str(self.path),
            version=version,
            expected=KEY_VERSION,
        )

    def count(self, tenant: str) -> int:
        """0 for an unreadable index: its owners are 未照合, the import goes on."""
        if self.unreadable is not None:
            return 0
        try:
            row = self._db.execute("select count(*) from residents where tenant = ?", (tenant,))
            return int(row.fetchone()[0])
        except sqlite3.DatabaseError as error:
            self.damaged(error)
            return 0

    def find(self, tenant: str, column: str, value: str) -> list[Resident]:
        """Nobody for an index found damaged (then :attr:`unreadable`: owners 未照合)."""
        if not value or self.unreadable is not None:
            return []
        assert column in ("name_key", "kana_key", "corporate_number", "corporate_bare")
        try:
            rows = self._db.execute(
                f"select {COLUMNS} from residents where tenant = ? and {column} = ?",
                (tenant, value),
            ).fetchall()
        except sqlite3.DatabaseError as error:
            self.damaged(error)
            return []
        return [Resident(*row) for row in rows]

    # --- feeds ------------------------------------------------------------------------------

    def refresh(self, sessions: sessionmaker[Session], tenant: str) -> int:
        """Read the 住民異動通知 stored since the last refresh; returns how many. An index
        found damaged on the way reads none (then :attr:`unreadable`)."""
        if self.unreadable is not None:
            return 0
        try:
            return self._refresh(sessions, tenant)
        except sqlite3.DatabaseError as error:
            self.damaged(error)
            return 0

    def _refresh(self, sessions: sessionmaker[Session], tenant: str) -> int:
        row = self._db.execute("select last_message from feeds where tenant = ?", (tenant,))
        found = row.fetchone()
        last = int(found[0]) if found else 0
        count = 0
        with sessions() as session:
            query = (
                select(StoredMessage.id, StoredMessage.body, StoredMessage.received_at)
                .where(StoredMessage.tenant == tenant)
                .where(StoredMessage.service == "ResidentChangeNotice")
                .where(StoredMessage.id > last)
                .order_by(StoredMessage.id)
                .execution_options(yield_per=1000)
            )
            batch: list[tuple[Resident, float]] = []
            for message_pk, body, received_at in session.execute(query):
                batch.append((_from_notice(body), _epoch(received_at)))
                last = message_pk
                if len(batch) >= 1000:
                    count += self._put(tenant, batch, rebuild=False)
                    batch = []
            count += self._put(tenant, batch, rebuild=False)
        with self._db:
            self._db.execute("insert or replace into feeds values (?, ?)", (tenant, last))
        return count

    def load_extract(self, path: Path, tenant: str) -> int:
        """A 宛名 extract (CSV with a header of ``EXTRACT_COLUMNS``; UTF-8 with or without a
        BOM, or CP932, detected as a notice file's is): the full load, all or nothing. Into
        a tenant whose rows are :meth:`outdated` it is a rebuild: the tenant's rows are the
        extract's, and its stored 住民異動通知 are read again by the next :meth:`refresh`.
        The extract says what was true when it was written (the file's modification time):
        a 宛名 stored from a later 住民異動通知 keeps that, and a notice stored earlier does
        not overwrite the extract's row when the feed is read (again)."""
        if self.unreadable is not None:
            raise _refused("RK-IMP010", f"{self.path}: {self.unreadable}")
        try:
            with path.open("rb") as raw:
                encoding = detect_encoding(raw).encoding
                raw.seek(0)
                text = io.TextIOWrapper(raw, _TEXT.get(encoding, encoding), newline="")
                rebuild = self.outdated(tenant) is not None
                written = path.stat().st_mtime
                rows = _extract_rows(csv.DictReader(text))
                return self.put(tenant, rows, rebuild, as_of=written)
        except OSError as error:  # missing, a folder, no permission
            raise _refused("RK-IO001", f"{path}: {error.strerror or error}") from None
        except (UnicodeDecodeError, csv.Error) as error:
            raise _refused("RK-IO001", f"{path}: {error}") from None
        except sqlite3.DatabaseError as error:  # damaged past its header: nothing loaded
            if self.unreadable is None:
                raise
            raise _refused("RK-IMP010", f"{self.path}: {error}") from None


def _epoch(moment: datetime) -> float:
    """A stored time (naive ones are UTC, as the store writes them) in epoch seconds."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def vars_of(entry: Resident) -> tuple[str, ...]:
    return (
        entry.addressee_number, entry.name_key, entry.kana_key, entry.address_key,
        entry.resident_type, entry.resident_status, entry.corporate_number,
        entry.corporate_key, entry.corporate_bare,
    )  # fmt: skip


def _refused(code: str, actual: str, expected: str = "") -> ExtractRefused:
    return ExtractRefused(make_finding(code, path="/residents", actual=actual, expected=expected))


_CODES = {  # the coded columns: their values (empty: the first)
    "住民種別": ("1", "2", "3"),
    "住民状態": ("1", "2", "3", "4", "5"),
}
_ITEMS = {  # a column → its catalogue item, for the English message
    "宛名番号": "addresseeNumber",
    "住民種別": "residentType",
    "住民状態": "residentStatus",
}


def _extract_rows(rows: csv.DictReader[str]) -> Iterator[Resident]:
    missing = [c for c in REQUIRED_COLUMNS if c not in (rows.fieldnames or ())]
    if missing:
        header = ",".join(_shown(cell, column=True) for cell in rows.fieldnames or ())
        raise _refused("RK-IMP008", header, expected=", ".join(missing))
    for row in rows:
        line = rows.line_num
        # a short row's missing cells are None; codes and numbers in either width. Without
        # its 宛名番号 a row would be matched (一致) to no one: refused. An empty 氏名 matches
        # no owner, so it may stay.
        number = _plain(row["宛名番号"])
        if not number:
            raise _bad_cell(line, "宛名番号", '""', '≠ ""')
        codes = {
            column: _plain(row.get(column)) or allowed[0] for column, allowed in _CODES.items()
        }
        for column, value in codes.items():
            if value not in _CODES[column]:
                raise _bad_cell(line, column, f'"{_shown(value)}"', ", ".join(_CODES[column]))
        yield resident(
            number,
            row["氏名"] or "",
            row.get("氏名カナ") or "",
            row.get("住所") or "",
            codes["住民種別"],
            codes["住民状態"],
            _plain(row.get("法人番号")).replace("-", ""),
        )


def _plain(cell: str | None) -> str:
    """A code or number cell as ASCII without spaces (３ → 3, ４０１１-００１０ → 4011-0010)."""
    return "".join(to_half_width(cell or "").split())


def _shown(cell: str, *, column: bool = False) -> str:
    """A cell as a refusal shows it (on stderr, which a scheduled import logs): an extract
    without its header row starts with a resident, and a row shifted by a comma in 氏名 puts
    the address under 住民種別, so anything but a column name (``column``) or a cell of at
    most two characters is masked (bus/masking.py: its length and shape stay, its content
    does not)."""
    if (column and cell in EXTRACT_COLUMNS) or len(cell) <= _SHOWN_AS_IS:
        return cell
    return mask(cell, personal=True)


def _bad_cell(line: int, column: str, actual: str, expected: str) -> ExtractRefused:
    """A row the extract cannot be loaded with; the message names the cell, never a name."""
    finding = make_finding(
        "RK-IMP016",
        path="/residents",
        item=_ITEMS[column],
        name_ja=column,
        line=line,
        actual=actual,
        expected=expected,
    )
    return ExtractRefused(finding)


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
