"""住民記録システム (juki): a sample resident-registry system, SOAP (spyne, code-first).

It answers 宛名照会 (AddresseeInquiry) from its own SQLite resident table, which it seeds with a
few sample residents per town on first start. It is the sender of 住民異動通知 in the demo.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from spyne import ComplexModel, ServiceBase, Unicode, rpc

from samples.systems.received import ReceivedLog
from samples.systems.soap_vendor import SoapSystem, header_types, reply_header

NAMESPACE = "urn:sample:juki:soap:1"
SYSTEM = "juki"
HEADER = header_types(NAMESPACE)

# (town, 宛名番号, 世帯番号, 氏名, カナ, 生年月日, 性別, 郵便番号, 住所)
SEED_RESIDENTS = [
    (
        "412066",
        "100000000000008",
        "200000000000005",
        "佐賀　太郎",
        "サガ　タロウ",
        "昭和50年4月1日",
        "1",
        "8400041",
        "佐賀県佐賀市城内一丁目1番1号",
    ),
    (
        "412066",
        "100000000000016",
        "200000000000005",
        "佐賀　花子",
        "サガ　ハナコ",
        "昭和52年10月3日",
        "2",
        "8400041",
        "佐賀県佐賀市城内一丁目1番1号",
    ),
    (
        "412074",
        "100000000000024",
        "200000000000013",
        "唐津　一郎",
        "カラツ　イチロウ",
        "平成2年1月15日",
        "1",
        "8470011",
        "佐賀県唐津市栄町2588番地3",
    ),
    (
        "414255",
        "100000000000032",
        "200000000000021",
        "有田　陶子",
        "アリタ　トウコ",
        "平成10年5月20日",
        "2",
        "8441101",
        "佐賀県西松浦郡有田町立部乙2202番地",
    ),
]
_COLUMNS = (
    "town, addressee_number, household_number, name, name_kana, date_of_birth, sex,"
    " postal_code, address"
)


class ResidentRegistry:
    """The system's own data (a vendor keeps it in its own database)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS residents ({_COLUMNS},"
            " PRIMARY KEY (town, addressee_number))"
        )
        self._db.executemany(
            f"INSERT OR IGNORE INTO residents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            SEED_RESIDENTS,
        )

    def find(self, town: str, addressee_number: str | None, name_kana: str | None) -> list[Any]:
        query, values = f"SELECT {_COLUMNS} FROM residents WHERE town = ?", [town]
        if addressee_number:
            query, values = query + " AND addressee_number = ?", [*values, addressee_number]
        if name_kana:
            query, values = query + " AND name_kana = ?", [*values, name_kana]
        with self._lock:
            return self._db.execute(query + " ORDER BY addressee_number", values).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class AddresseeQuery(ComplexModel):
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(min_occurs=1, pattern="[0-9]{6}")
    addresseeNumber = Unicode(pattern="[0-9]{1,15}")
    nameKana = Unicode(max_len=100)
    dateOfBirth = Unicode(max_len=40)


class AddresseeRecord(ComplexModel):
    __namespace__ = NAMESPACE
    addresseeNumber = Unicode(min_occurs=1)
    householdNumber = Unicode
    name = Unicode
    nameKana = Unicode
    dateOfBirth = Unicode
    sex = Unicode
    postalCode = Unicode
    address = Unicode


class AddresseeAnswer(ComplexModel):
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(min_occurs=1)
    Result = AddresseeRecord.customize(max_occurs="unbounded")


def build(data_dir: Path, path: str = f"/{SYSTEM}") -> SoapSystem:
    registry = ResidentRegistry(data_dir / "juki-residents.db")
    log = ReceivedLog(data_dir / "juki-received.db", SYSTEM)

    class ResidentRegistryService(ServiceBase):
        __in_header__ = HEADER.header
        __out_header__ = HEADER.header

        @rpc(AddresseeQuery, _body_style="bare", _returns=AddresseeAnswer)
        def AddresseeInquiry(ctx: Any, query: AddresseeQuery) -> AddresseeAnswer:
            header = ctx.in_header
            if header is not None:
                log.record(
                    "AddresseeInquiry",
                    header.messageId,
                    tenant=header.client.tenant,
                    fields={"localGovernmentCode": query.localGovernmentCode},
                )
                ctx.out_header = reply_header(HEADER, header, SYSTEM)
            rows = registry.find(query.localGovernmentCode, query.addresseeNumber, query.nameKana)
            return AddresseeAnswer(
                localGovernmentCode=query.localGovernmentCode,
                Result=[
                    AddresseeRecord(
                        addresseeNumber=row[1],
                        householdNumber=row[2],
                        name=row[3],
                        nameKana=row[4],
                        dateOfBirth=row[5],
                        sex=row[6],
                        postalCode=row[7],
                        address=row[8],
                    )
                    for row in rows
                ],
            )

    return SoapSystem([ResidentRegistryService], NAMESPACE, path, log)
