"""A sending system's 外字 (a private-use code point with its 代替文字 in ``alt``) through every
outbound path of a real `renkei serve --samples`.

A PUA code point means something only inside the system that defined it. Where the standard
document goes as it is (HTTP without a mapping) the text and its ``alt`` travel together;
where it becomes a form without ``alt`` (a mapping's JSON or XML, a CSV hot-folder batch,
the by-name SOAP binding) the receiver gets the 代替文字, never the raw code point it would
read as its own 外字 (滞納管理's table maps U+E000 to 𠮷, CP932 writes it as 0xF040).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from lxml import etree

from adapters.soap_out.binding import request_parts
from bus.mapping.operations import alt_for_private_use

from .conftest import SAMPLE_CONFIG_DIR
from .support.hub_server import sample, soap_envelope
from .support.receivers import free_port
from .support.samples_hub import serve_with_samples
from .test_characters_end_to_end import Hub, _batch_line, _received, _subject

pytestmark = [pytest.mark.interop, pytest.mark.hotfolder]
STD = "{urn:renkei:platform:standard:1}"
ENV = "{urn:renkei:platform:envelope:1}"
TENANT = "412066"

# the sender's 外字 U+E000 for 吉 (its 代替文字 of the same length: character by character)
NAME, NAME_ALT = "\ue000田\u3000花子", "吉田\u3000花子"
# a 代替文字 of another length replaces the whole text
HEAD, HEAD_ALT = "\ue000田\u3000太郎", "吉田太郎"
FOLDERS = {"kotei": "cp932", "kaigo": "utf-8"}  # kaigo: a UTF-8 hot folder added here
KOKUHO = {
    "format": "json",
    "fields": [
        {"to": "kojin.shimei", "from": "name"},
        {"to": "kojin.shimeiAlt", "from": "name@alt"},  # an explicit @alt keeps working
        {"to": "kojin.setainushi", "from": "headOfHouseholdName"},
    ],
}
CSV = {
    "format": "csv",
    "columns": ["宛名番号", "氏名", "世帯主氏名"],
    "fields": [
        {"to": "宛名番号", "from": "addresseeNumber"},
        {"to": "氏名", "from": "name"},
        {"to": "世帯主氏名", "from": "headOfHouseholdName"},
    ],
}


def _mapping(directory: Path, system: str, section: dict[str, Any]) -> str:
    document = {
        "system": system,
        "description": f"{system}: 外字 outbound",
        "services": {"ResidentChangeNotice": {"outbound": section}},
    }
    path = directory / f"{system}_gaiji.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return str(path)


def _edit(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")


def _config(tmp: Path) -> tuple[Path, dict[str, str], dict[str, Path]]:
    """The sample configuration on free ports: kokuho through a JSON mapping, 固定資産税 a
    CP932 CSV hot folder, a 介護 system added as a UTF-8 one; shuno (HTTP, no mapping) takes
    the platform XML, zeimu the by-name SOAP binding, tainou its own XML (tainou.yaml)."""
    config = tmp / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, config)
    mappings = tmp / "mappings"
    mappings.mkdir()
    urls: dict[str, str] = {}
    folders = {system: tmp / "out" / system for system in FOLDERS}

    def systems(document: dict[str, Any]) -> None:
        entries = document["systems"]
        kotei = next(e for e in entries if e["id"] == "kotei")
        entries.append({**kotei, "id": "kaigo", "name": "介護保険システム"})
        for entry in entries:
            system = entry["id"]
            if "endpoint" in entry:
                url = f"http://127.0.0.1:{free_port()}/{system}"
                entry["endpoint"] = {**entry["endpoint"], "url": url}
                urls[system] = url
            if system == "kokuho":
                entry["mapping"] = _mapping(mappings, system, KOKUHO)
            if system in FOLDERS:
                entry["mapping"] = _mapping(mappings, system, {**CSV, "encoding": FOLDERS[system]})
                entry.pop("endpoint")
                entry["file_linkage"] = {
                    "outbound": {
                        "path": str(folders[system]),
                        "interval": "PT1S",
                        "encoding": FOLDERS[system],
                        "records": {"header": "H", "trailer": "T"},
                    }
                }

    def routes(document: dict[str, Any]) -> None:
        route = next(r for r in document["routes"] if r["service"] == "ResidentChangeNotice")
        route["subscribers"].append({"system": "kaigo"})

    def access(document: dict[str, Any]) -> None:
        document["access"].append({"system": "kaigo", "receive": ["ResidentChangeNotice"]})

    _edit(config / "systems.yaml", systems)
    _edit(config / "routes.yaml", routes)
    _edit(config / "access.yaml", access)
    return config, urls, folders


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("gaiji")
    config, urls, folders = _config(tmp)
    with serve_with_samples(config, tmp) as (url, env, log):
        yield Hub(url, env, urls, folders, log)


def _send_soap(hub: Hub) -> str:
    """The sample 住民異動通知 (転居: every subscriber takes it) with the 外字 names."""
    document = sample("ResidentChangeNotice")
    texts = {
        f".//{ENV}tenant": TENANT,
        f".//{ENV}subject": _subject(),
        f".//{STD}localGovernmentCode": TENANT,
        f".//{STD}changeReason": "301",
        f".//{STD}name": NAME,
        f".//{STD}headOfHouseholdName": HEAD,
    }
    for path, text in texts.items():
        element = document.find(path)
        assert element is not None, path
        element.text = text
    document.find(f".//{STD}name").set("alt", NAME_ALT)  # type: ignore[union-attr]
    document.find(f".//{STD}headOfHouseholdName").set("alt", HEAD_ALT)  # type: ignore[union-attr]
    message_id = document.findtext(f".//{ENV}messageId") or ""
    answer = httpx.post(
        f"{hub.url}/soap/ResidentChangeNotice",
        content=soap_envelope(document),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return message_id


@pytest.fixture(scope="module")
def sent(hub: Hub) -> str:
    return _send_soap(hub)


def test_platform_xml_keeps_the_gaiji_and_its_alt(hub: Hub, sent: str) -> None:
    shuno = _received(hub, "shuno", sent)  # HTTP, no mapping: the standard document itself
    assert (shuno["name"], shuno["name@alt"]) == (NAME, NAME_ALT)
    assert (shuno["headOfHouseholdName"], shuno["headOfHouseholdName@alt"]) == (HEAD, HEAD_ALT)


def test_a_mapping_gives_the_alt_and_an_explicit_alt_still_reads(hub: Hub, sent: str) -> None:
    kokuho = json.loads(_received(hub, "kokuho", sent)["record"])
    assert kokuho == {"kojin": {"shimei": NAME_ALT, "shimeiAlt": NAME_ALT, "setainushi": HEAD_ALT}}


def test_the_receivers_gaiji_table_never_reads_the_senders_code_point(hub: Hub, sent: str) -> None:
    tainou = _received(hub, "tainou", sent)  # tainou_gaiji: U+E000 is its 𠮷
    assert (tainou["氏名"], tainou["世帯主氏名"]) == (NAME_ALT, HEAD_ALT)


def test_the_soap_binding_gives_the_alt(hub: Hub, sent: str) -> None:
    zeimu = _received(hub, "zeimu", sent)  # the by-name binding: no attributes
    assert zeimu["name"] == NAME_ALT


@pytest.mark.parametrize("system", sorted(FOLDERS))
def test_hot_folder_batches_give_the_alt(hub: Hub, sent: str, system: str) -> None:
    line = _batch_line(hub, system, sent)
    assert line == f"8842282030,{NAME_ALT},{HEAD_ALT}".encode(FOLDERS[system])


def test_alt_rule() -> None:
    """Same length: position by position (other characters kept); another length: the whole
    ``alt``; no ``alt``: the text as it is (ingest flags that, RK-DOM021)."""
    assert alt_for_private_use("\ue000田", "吉田") == "吉田"
    assert alt_for_private_use("\ue000\U000f0000x", "吉辺y") == "吉辺x"
    assert alt_for_private_use("\ue000田", "吉田（外字）") == "吉田（外字）"
    assert alt_for_private_use("\ue000田", None) == "\ue000田"
    assert alt_for_private_use("吉田", "キチダ") == "吉田"  # no PUA: the alt is not used


def test_soap_binding_reads_the_alt_only_for_a_gaiji() -> None:
    document = sample("ResidentChangeNotice")
    name = document.find(f".//{STD}name")
    assert name is not None
    name.text = NAME
    name.set("alt", NAME_ALT)
    fields = request_parts(etree.tostring(document)).fields
    assert fields["name"] == NAME_ALT
    assert fields["changeDate"] == document.findtext(f".//{STD}changeDate")
