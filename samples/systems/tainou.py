"""滞納管理システム (tainou): a sample delinquency manager speaking its own XML over REST.

Its dialect (namespace ``urn:example:tainou:1``, Japanese element names, its own tax-item
codes, 和暦 dates) is what ``mappings/tainou.yaml`` translates to and from; the hub posts the
translated documents with the ``http`` transport. It records every notification it receives
and answers 滞納照会 (the hub's 滞納情報照会) with 滞納照会回答 from its own SQLite table of unpaid
installments, seeded on first start.
"""

from __future__ import annotations

import copy
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from lxml import etree

from samples.systems.rest_systems import create_app

SYSTEM = "tainou"
NAMESPACE = "urn:example:tainou:1"
_T = f"{{{NAMESPACE}}}"
ENVELOPE = "urn:renkei:platform:envelope:1"
_E = f"{{{ENVELOPE}}}"

# (town, 宛名番号, 滞納整理番号, 税目, 年度, 期別, 調定額, 収納額, 納期限)
SEED_ARREARS = [
    (
        "412066",
        "100000000000008",
        "T2025-0001",
        "JUMIN",
        "2025",
        "01",
        "70000",
        "0",
        "令和7年6月30日",
    ),
    (
        "412066",
        "100000000000008",
        "T2025-0001",
        "JUMIN",
        "2025",
        "02",
        "70000",
        "20000",
        "令和7年8月31日",
    ),
    (
        "414255",
        "100000000000032",
        "T2025-0107",
        "KOTEI",
        "2025",
        "01",
        "41000",
        "0",
        "令和7年4月30日",
    ),
]


class Arrears:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS arrears (town, addressee_number, case_number, tax_item,"
            " fiscal_year, period, levy, paid, due,"
            " PRIMARY KEY (town, addressee_number, tax_item, fiscal_year, period))"
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO arrears VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", SEED_ARREARS
        )

    def of(self, town: str, number: str, tax_item: str | None) -> list[Any]:
        query = "SELECT * FROM arrears WHERE town = ? AND addressee_number = ?"
        values = [town, number]
        if tax_item:
            query, values = query + " AND tax_item = ?", [*values, tax_item]
        with self._lock:
            return self._db.execute(query + " ORDER BY fiscal_year, period", values).fetchall()


def _answer(arrears: Arrears, root: etree._Element) -> bytes | None:
    """滞納照会 → 滞納照会回答; notifications get no answer body. The hub sends the 滞納照会
    inside a PlatformMessage (its Header kept): the answer is then one too, with its own
    messageId and the request's as correlationId."""
    if root.tag == f"{_E}PlatformMessage":
        children = [child for child in root if isinstance(child.tag, str)]
        if len(children) < 2 or children[1].tag != f"{_T}滞納照会":
            return None
        answer = _answer(arrears, children[1])
        assert answer is not None
        return _wrapped(children[0], answer)
    if root.tag != f"{_T}滞納照会":
        return None
    town, number = root.findtext(f"{_T}団体コード") or "", root.findtext(f"{_T}宛名番号") or ""
    rows = arrears.of(town, number, root.findtext(f"{_T}税目"))
    answer = etree.Element(f"{_T}滞納照会回答", nsmap={"tn": NAMESPACE})
    etree.SubElement(answer, f"{_T}団体コード").text = town
    etree.SubElement(answer, f"{_T}宛名番号").text = number
    if rows:
        levy = etree.SubElement(answer, f"{_T}課税")
        for row in rows:
            item = etree.SubElement(levy, f"{_T}期別明細")
            for name, value in zip(
                ("税目", "年度", "期別", "調定額", "収納額", "納期限"), row[3:], strict=True
            ):
                etree.SubElement(item, f"{_T}{name}").text = value
        etree.SubElement(answer, f"{_T}滞納整理番号").text = rows[0][2]
        unpaid = sum(int(row[6]) - int(row[7]) for row in rows)
        etree.SubElement(answer, f"{_T}滞納額").text = str(unpaid)
    return etree.tostring(answer, encoding="UTF-8", xml_declaration=True)


def _wrapped(request: etree._Element, answer: bytes) -> bytes:
    """A PlatformMessage around ``answer``: the reply Header to the request's Header."""
    header = etree.Element(f"{_E}Header", nsmap={"env": ENVELOPE})
    request_id = request.findtext(f"{_E}messageId") or ""
    values = [
        ("messageId", str(uuid.uuid4())),
        ("correlationId", request_id),
    ]
    for name, value in values:
        etree.SubElement(header, f"{_E}{name}").text = value
    service = request.find(f"{_E}service")
    if service is not None:
        header.append(copy.deepcopy(service))
    client = etree.SubElement(header, f"{_E}client")
    etree.SubElement(client, f"{_E}tenant").text = request.findtext(f"{_E}client/{_E}tenant")
    etree.SubElement(client, f"{_E}system").text = SYSTEM
    issued = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    etree.SubElement(header, f"{_E}issuedAt").text = issued
    etree.SubElement(header, f"{_E}protocolVersion").text = "1.0"
    message = etree.Element(f"{_E}PlatformMessage", nsmap={"env": ENVELOPE})
    message.append(header)
    message.append(etree.fromstring(answer))
    return etree.tostring(message, encoding="UTF-8", xml_declaration=True)


def build(data_dir: Path, path: str = f"/{SYSTEM}") -> FastAPI:
    arrears = Arrears(data_dir / "tainou-arrears.db")
    return create_app(SYSTEM, data_dir, path, answer=lambda root: _answer(arrears, root))
