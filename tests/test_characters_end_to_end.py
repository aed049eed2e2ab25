"""Residents' names through every outbound path of a real `renkei serve --samples`: a
住民異動通知 sent over SOAP and as REST JSON reaches 税務 (SOAP, the spyne sample), 国保 (JSON
through a mapping, over HTTP), 滞納管理 (its own XML through tainou.yaml, 外字 table), 収納 (a
CSV hot-folder batch in CP932) and 固定資産税 (the same in UTF-8).

What each receiver gets is compared with what was sent, character for character, after only
what the product documents: the 外字 table's PUA code points (tainou), and in CP932 the
codec's own mapping of 〜 (U+301C) and − (U+2212) to 0x8160 and 0x817C, which CP932 readers read
as ～ and － (docs/mapping-guide.md). A name CP932 cannot hold (𠮷, an IVS) is a coded
RK-MAP007 dead letter for the CP932 destination, never a ? or a 〓 in its file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from lxml import etree
from zeep import Client, Settings

from adapters.rest.json_form import Node, child_table, to_json

from .conftest import SAMPLE_CONFIG_DIR
from .support.hub_server import sample, soap_envelope
from .support.receivers import wait_for
from .support.samples_hub import RENKEI, sample_ports_freed, serve_with_samples

pytestmark = [pytest.mark.interop, pytest.mark.hotfolder]
STD = "{urn:renkei:platform:standard:1}"
ENV = "{urn:renkei:platform:envelope:1}"
TENANT = "412066"

# representable in CP932 (NEC/IBM extensions included), with the signs CP932 folds; 神
# (U+FA19, an IBM compatibility ideograph) is one NFC would turn into 神 U+795E
CP932_NAME = "髙橋　﨑\ufa19子"
CP932_ADDRESS = "佐賀県武雄市武雄町大字富岡1−2−3ー4‐5〜～　㈱ビル①\u3000"
# beyond CP932: outside the BMP, IVS, NBSP
WIDE_NAME = "𠮷田　葛\U000e0100飾辻\U000e0100"
WIDE_ADDRESS = "佐賀県武雄市武雄町大字富岡1−2−3\u00a0ハイツ𠮷田"
KANA = "ヨシダ　タカハシ"
CP932_READ_BACK = str.maketrans({"\u301c": "\uff5e", "\u2212": "\uff0d"})

MAPPINGS: dict[str, dict[str, Any]] = {
    "kokuho": {
        "format": "json",
        "fields": [
            {"to": "kojin.shimei", "from": "name"},
            {"to": "kojin.kana", "from": "nameKana"},
            {"to": "kojin.jusho", "from": "address"},
        ],
    },
    "shuno": {"format": "csv", "encoding": "cp932"},
    "kotei": {"format": "csv", "encoding": "utf-8"},
}
CSV_COLUMNS = ["宛名番号", "氏名", "カナ", "住所"]
CSV_FIELDS = [
    {"to": "宛名番号", "from": "addresseeNumber"},
    {"to": "氏名", "from": "name"},
    {"to": "カナ", "from": "nameKana"},
    {"to": "住所", "from": "address"},
]


@dataclass(frozen=True)
class Hub:
    url: str
    env: dict[str, str]
    systems: dict[str, str]
    folders: dict[str, Path]
    log: Path


def _mapping(directory: Path, system: str) -> Path:
    section = dict(MAPPINGS[system])
    if section["format"] == "csv":
        section |= {"columns": CSV_COLUMNS, "fields": CSV_FIELDS}
    document = {
        "system": system,
        "description": f"{system}: characters end to end",
        "services": {"ResidentChangeNotice": {"outbound": section}},
    }
    path = directory / f"{system}_chars.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _config(tmp: Path) -> tuple[Path, dict[str, str], dict[str, Path]]:
    config = tmp / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, config)
    path = config / "systems.yaml"
    urls = sample_ports_freed(path)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    folders: dict[str, Path] = {}
    mappings = tmp / "mappings"  # beside the configuration: every YAML file in it is config
    mappings.mkdir()
    for entry in document["systems"]:
        system = entry["id"]
        if system in MAPPINGS:
            entry["mapping"] = str(_mapping(mappings, system))
        if system in ("shuno", "kotei"):
            folders[system] = tmp / "out" / system
            entry.pop("endpoint")
            entry["file_linkage"] = {
                "outbound": {
                    "path": str(folders[system]),
                    "interval": "PT1S",
                    "encoding": MAPPINGS[system]["encoding"],
                    "records": {"header": "H", "trailer": "T"},
                }
            }
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    return config, urls, folders


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("characters")
    config, urls, folders = _config(tmp)
    with serve_with_samples(config, tmp) as (url, env, log):
        yield Hub(url, env, urls, folders, log)


def _subject() -> str:
    """An ordering key of its own: a dead letter holds its subject (docs/dispatch.md), and
    the tests' messages must not wait behind each other's."""
    return str(uuid.uuid4().int)[:10]


def _notice(name: str, address: str) -> tuple[str, etree._Element]:
    """The sample 住民異動通知 for 武雄市, 転居 (every subscriber takes it), with these texts."""
    document = sample("ResidentChangeNotice")
    texts = {
        f".//{ENV}tenant": TENANT,
        f".//{ENV}subject": _subject(),
        f".//{STD}localGovernmentCode": TENANT,
        f".//{STD}changeReason": "301",
        f".//{STD}name": name,
        f".//{STD}headOfHouseholdName": name,
        f".//{STD}nameKana": KANA,
        f".//{STD}address": address,
    }
    for path, text in texts.items():
        element = document.find(path)
        assert element is not None, path
        element.text = text
    return document.findtext(f".//{ENV}messageId") or "", document


def _send_soap(hub: Hub, name: str, address: str) -> str:
    message_id, document = _notice(name, address)
    answer = httpx.post(
        f"{hub.url}/soap/ResidentChangeNotice",
        content=soap_envelope(document),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return message_id


def _zeep_value(value: object, node: Node) -> object:
    """The JSON form as zeep's keyword arguments (attributes: ``_value_1`` and their names)."""
    if isinstance(value, dict) and ("$" in value or any(k.startswith("@") for k in value)):
        return {("_value_1" if k == "$" else k[1:]): v for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _zeep_value(v, node.children[k]) for k, v in value.items()}
    return value


def _send_zeep(hub: Hub, name: str, address: str) -> str:
    """zeep, an independent SOAP stack, reading the hub's WSDL."""
    message_id, document = _notice(name, address)
    wsdl = f"{hub.url}/soap/ResidentChangeNotice?wsdl"
    client = Client(wsdl, settings=Settings(strict=True))  # type: ignore[no-untyped-call]
    service = "ResidentChangeNotice"
    arguments = _zeep_value(to_json(document)[service], child_table().root[service])
    assert isinstance(arguments, dict)
    answer = client.service.ResidentChangeNotice(_soapheaders=[document[0]], **arguments)
    assert str(answer.messageId) == message_id
    return message_id


def _send_json(hub: Hub, name: str, address: str) -> str:
    """The JSON form, written with \\u escapes (𠮷 as a surrogate pair) as many clients do."""
    message_id = str(uuid.uuid4())
    document = {
        "Header": {
            "messageId": message_id,
            "service": {"name": "ResidentChangeNotice", "version": "1.0"},
            "client": {"tenant": TENANT, "system": "juki"},
            "subject": _subject(),
            "issuedAt": "2026-04-01T11:04:43+09:00",
            "protocolVersion": "1.0",
        },
        "ResidentChangeNotice": {
            "localGovernmentCode": TENANT,
            "addresseeNumber": "8842282030",
            "changeReason": "301",
            "changeDate": {"$": "令和2年3月15日", "@iso": "2020-03-15"},
            "name": name,
            "nameKana": KANA,
            "address": address,
        },
    }
    body = json.dumps(document, ensure_ascii=True).encode("ascii")
    answer = httpx.post(
        f"{hub.url}/api/v1/messages/ResidentChangeNotice",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return message_id


def _received(hub: Hub, system: str, message_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        rows = httpx.get(f"{hub.systems[system]}/received", timeout=5).json()
        found[:] = [row for row in rows if row["message_id"] == message_id]
        return bool(found)

    wait_for(arrived, 20)
    fields: dict[str, Any] = found[0]["fields"]
    return fields


def _batch_line(hub: Hub, system: str, message_id: str) -> bytes:
    """The record of ``message_id`` in the system's outbound batch files (raw bytes)."""
    found: list[bytes] = []

    def written() -> bool:
        for end in hub.folders[system].glob("*.end"):
            batch = end.with_suffix("")
            ids = Path(f"{batch}.ids").read_text().split()
            if message_id in ids:
                records = batch.read_bytes().split(b"\r\n")[2:-2]  # H, columns … T, ""
                found.append(records[ids.index(message_id)])
                return True
        return False

    wait_for(written, 20)
    return found[0]


def _dead_letters(hub: Hub, message_id: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [RENKEI, "dlq", "list", "--json"], env=hub.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return [row for row in json.loads(done.stdout) if row["message_id"] == message_id]


def _check_everywhere_but_cp932(hub: Hub, message_id: str, name: str, address: str) -> None:
    zeimu = _received(hub, "zeimu", message_id)  # SOAP: zeep → spyne
    assert (zeimu["name"], zeimu["nameKana"], zeimu["address"]) == (name, KANA, address)
    kokuho = json.loads(_received(hub, "kokuho", message_id)["record"])  # JSON via a mapping
    assert kokuho == {"kojin": {"shimei": name, "kana": KANA, "jusho": address}}
    tainou = _received(hub, "tainou", message_id)  # its XML, 外字 table 𠮷→U+E000, 髙→U+E001
    gaiji = str.maketrans({"𠮷": "\ue000", "髙": "\ue001"})
    assert tainou["氏名"] == name.translate(gaiji)
    assert tainou["カナ氏名"] == KANA
    line = _batch_line(hub, "kotei", message_id).decode("utf-8")  # UTF-8 hot folder
    assert line == f"8842282030,{name},{KANA},{address}"


@pytest.mark.parametrize("send", [_send_soap, _send_zeep, _send_json], ids=["soap", "zeep", "json"])
def test_cp932_names_arrive_unchanged_everywhere(hub: Hub, send: Any) -> None:
    message_id = send(hub, CP932_NAME, CP932_ADDRESS)
    _check_everywhere_but_cp932(hub, message_id, CP932_NAME, CP932_ADDRESS)
    line = _batch_line(hub, "shuno", message_id)
    expected = f"8842282030,{CP932_NAME},{KANA},{CP932_ADDRESS}"
    assert line == expected.encode("cp932")
    assert line.decode("cp932") == expected.translate(CP932_READ_BACK)


@pytest.mark.parametrize("send", [_send_soap, _send_zeep, _send_json], ids=["soap", "zeep", "json"])
def test_names_beyond_cp932_arrive_unchanged_or_are_a_coded_dead_letter(
    hub: Hub, send: Any
) -> None:
    message_id = send(hub, WIDE_NAME, WIDE_ADDRESS)
    _check_everywhere_but_cp932(hub, message_id, WIDE_NAME, WIDE_ADDRESS)
    dead: list[dict[str, Any]] = []

    def dead_lettered() -> bool:
        dead[:] = _dead_letters(hub, message_id)
        return bool(dead)

    wait_for(dead_lettered, 20)
    [letter] = dead
    assert letter["destination"] == "shuno"
    assert "RK-MAP007" in json.dumps(letter, ensure_ascii=False)
    for batch in hub.folders["shuno"].glob("*.csv"):
        assert message_id not in Path(f"{batch}.ids").read_text()
    log = hub.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log
    leaked = [text for text in ("𠮷", "葛", "髙", "﨑", "ハイツ") if text in log]
    assert not leaked, "names or addresses in clear in the hub's log"
