"""File linkage in the other formats, end to end through the folder watcher and the hub: XML
files (the 滞納管理 vendor's documents, root ``flag``/``count``), CSV files in UTF-8 (法務局
登記済通知) and in CP932 (収納 vendor, mappings/shuno.yaml), with their header and trailer
records; and the CSV batch files written for a file-linkage destination."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from sqlalchemy import select

from bus.config.models import FileRecords
from bus.folders.records import unframe
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.mapping import load_mapping
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.samplegen.values import TOWNS
from bus.settings import Settings
from bus.store.models import Delivery, StoredMessage
from tests.support.folders import ROOT, drop, folder_config, report_of
from tests.support.receivers import wait_for

pytestmark = pytest.mark.hotfolder

MAPPINGS = ROOT / "mappings"
TAINOU = "urn:example:tainou:1"


def stored(hub: Hub) -> list[StoredMessage]:
    with hub.store.sessions() as session:
        return list(session.scalars(select(StoredMessage).order_by(StoredMessage.id)))


def destinations(hub: Hub) -> list[str]:
    with hub.store.sessions() as session:
        return sorted(session.scalars(select(Delivery.destination)))


def values(message: StoredMessage, item: str) -> list[str]:
    service = etree.fromstring(message.body)[-1]  # after the Header
    return [e.text or "" for e in service.iter(f"{{*}}{item}")]  # standard or extension item


def open_hub(settings: Settings, config: Path) -> Hub:
    return Hub.open(settings.model_copy(update={"config_dir": config}))


# --- XML: 滞納処分通知 from the 滞納管理 vendor ---------------------------------------------

XML_RECORD = etree.parse(
    str(MAPPINGS / "golden" / "tainou" / "DelinquencyActionNotice.inbound.full.input.xml")
).getroot()


def xml_file(
    count: int,
    *,
    flag: str = "1",
    declared: int | None = None,
    bad: tuple[int, ...] = (),
    encoding: str = "UTF-8",
) -> bytes:
    """The vendor's file: its notices (宛名番号 41000000NN) under a root whose ``flag`` and
    ``count`` are the header and trailer; a notice in ``bad`` has a 納期限 that is no day."""
    root = etree.Element(f"{{{TAINOU}}}滞納処分通知ファイル", nsmap={"tn": TAINOU})
    root.set("flag", flag)
    root.set("count", str(count if declared is None else declared))
    for number in range(1, count + 1):
        notice = copy.deepcopy(XML_RECORD)
        addressee = notice.find(f"{{{TAINOU}}}宛名番号")
        due = notice.find(f"{{{TAINOU}}}納期限")
        assert addressee is not None and due is not None
        addressee.text = f"41{number:08d}"
        name = notice.find(f"{{{TAINOU}}}氏名")
        assert name is not None
        name.text = "髙橋　美咲"  # 髙: an IBM extension of CP932, not in Shift_JIS
        if number in bad:
            due.text = "令和7年2月30日"
        root.append(notice)
    if encoding == "cp932":  # as vendors write it: CP932 bytes, declared Shift_JIS
        text = etree.tostring(root, encoding="unicode")
        return f'<?xml version="1.0" encoding="Shift_JIS"?>\n{text}'.encode("cp932")
    data = etree.tostring(root, xml_declaration=True, encoding=encoding)
    assert isinstance(data, bytes)
    return data


@pytest.fixture
def tainou_inbox(tmp_path: Path) -> Path:
    return tmp_path / "in" / "tainou"


def tainou_config(tmp_path: Path, inbox: Path, encoding: str = "utf-8") -> Path:
    folder = {
        "path": str(inbox),
        "service": "DelinquencyActionNotice",
        "tenant": "412091",  # the golden notice's 団体コード
        "subject": "addresseeNumber",
        "encoding": encoding,
    }
    return folder_config(tmp_path, folder, system="tainou", mapping="tainou.yaml")


def test_an_xml_file_goes_record_by_record_through_the_pipeline_and_again_stores_nothing(
    tmp_path: Path, tainou_inbox: Path, store_settings: Settings
) -> None:
    hub = open_hub(store_settings, tainou_config(tmp_path, tainou_inbox))
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        data = xml_file(3, bad=(2,))
        drop(tainou_inbox, "TAINOU001.xml", data)
        (moved,) = watcher.poll_once()
        assert moved == tainou_inbox / "done" / "TAINOU001.xml"
        report = report_of(moved)
        assert report["extent"] == "full"  # flag="1": 全件
        assert (report["records"], report["stored"], report["rejected"]) == (3, 2, 1)
        (error,) = report["errors"]
        assert error["record"] == 2 and error["findings"][0]["code"] == "RK-MAP004"

        messages = stored(hub)  # records of different subjects: in lanes, any order
        assert sorted(values(m, "addresseeNumber")[0] for m in messages) == [
            "4100000001",
            "4100000003",
        ]
        assert {(m.system, m.tenant, m.service) for m in messages} == {
            ("tainou", "412091", "DelinquencyActionNotice")
        }
        assert all(m.subject == values(m, "addresseeNumber")[0] for m in messages)
        assert values(messages[0], "dueDate") == ["2025-08-22"]  # 令和7年8月22日, translated
        assert destinations(hub) == ["shuno", "shuno", "zeimu", "zeimu"]

        drop(tainou_inbox, "TAINOU001.xml", data)  # delivered again
        (again,) = watcher.poll_once()
        assert again == tainou_inbox / "done" / "TAINOU001.xml.1"
        report = report_of(again)
        assert (report["stored"], report["duplicates"], report["rejected"]) == (0, 2, 1)
        assert len(stored(hub)) == 2 and len(destinations(hub)) == 4
    finally:
        hub.close()


def test_an_xml_file_whose_count_or_flag_is_wrong_goes_whole_to_error(
    tmp_path: Path, tainou_inbox: Path
) -> None:
    hub = open_hub(Settings(data_dir=tmp_path / "data"), tainou_config(tmp_path, tainou_inbox))
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        drop(tainou_inbox, "TAINOU002.xml", xml_file(3, declared=4))
        drop(tainou_inbox, "TAINOU003.xml", xml_file(1, flag="9"))
        moved = watcher.poll_once()
        assert moved == [
            tainou_inbox / "error" / "TAINOU002.xml",
            tainou_inbox / "error" / "TAINOU003.xml",
        ]
        count, flag = (report_of(path)["refused"] for path in moved)
        assert isinstance(count, dict) and count["code"] == "RK-FIL003"
        assert "4" in count["message_ja"] and "3" in count["message_ja"]
        assert isinstance(flag, dict) and flag["code"] == "RK-FIL004"
        assert all(Path(f"{path}.end").exists() for path in moved)
        assert stored(hub) == []
    finally:
        hub.close()


# --- CSV in UTF-8: 登記済通知 from the 法務局 --------------------------------------------------

HOUMU_HEADER, HOUMU_LINE = (
    (MAPPINGS / "golden" / "houmu" / "RegistrationNotice.inbound.full.input.csv")
    .read_text(encoding="utf-8")
    .splitlines()[:2]
)


def houmu_file(count: int, *, bad: tuple[int, ...] = ()) -> bytes:
    """A 全件 file of ``count`` notices (受付番号 900NN; 地目 unknown in those in ``bad``),
    the column names after the header record. The 𠮷 of the golden line needs UTF-8."""
    lines = ["H,1,20260401", HOUMU_HEADER]
    for number in range(1, count + 1):
        columns = HOUMU_LINE.split(",")
        columns[1] = f"900{number:02d}"
        if number in bad:
            columns[7] = "火星"
        lines.append(",".join(columns))
    lines.append(f"T,{count}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def test_a_utf8_csv_file_with_header_and_trailer_goes_through_the_pipeline(
    tmp_path: Path, store_settings: Settings
) -> None:
    inbox = tmp_path / "in" / "houmu"
    folder = {"path": str(inbox), "service": "RegistrationNotice", "tenant": "412066"}
    config = folder_config(tmp_path, folder, system="houmu", mapping="houmu.yaml")
    hub = open_hub(store_settings, config)
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        data = houmu_file(3, bad=(3,))
        assert "𠮷".encode() in data
        drop(inbox, "TOUKI001.csv", data)
        (moved,) = watcher.poll_once()
        report = report_of(moved)
        assert moved.parent.name == "done" and report["extent"] == "full"
        assert (report["records"], report["stored"], report["rejected"]) == (3, 2, 1)
        (error,) = report["errors"]
        assert error["record"] == 3 and error["findings"][0]["code"].startswith("RK-MAP")

        messages = stored(hub)
        assert [values(m, "receiptNumber") for m in messages] == [["90001"], ["90002"]]
        assert values(messages[0], "rightHolderName")[0] == "𠮷田　浩二"
        assert destinations(hub) == ["kotei", "kotei"]

        drop(inbox, "TOUKI001.csv", data)
        (again,) = watcher.poll_once()
        report = report_of(again)
        assert (report["stored"], report["duplicates"], report["rejected"]) == (0, 2, 1)
        assert len(stored(hub)) == 2
    finally:
        hub.close()


# --- CSV in CP932: 収納情報通知 from the 収納 vendor, through `renkei folders run --once` ------

SHUNO_GOLDEN = MAPPINGS / "golden" / "shuno" / "PaymentNotice.inbound.full.input.csv"
SHUNO_COLUMNS = SHUNO_GOLDEN.read_bytes().decode("cp932").splitlines()[0]


def shuno_file(count: int, *, declared: int | None = None, bad: tuple[int, ...] = ()) -> bytes:
    """A 差分 file of ``count`` payments in CP932 (税目 and 納付方法 by name, 和暦 dates); a
    payment in ``bad`` was received on 令和8年2月30日."""
    lines = ["H,2,20260401", SHUNO_COLUMNS]
    methods = ("口座振替", "特徴（給与）", "地方税統一ＱＲ")
    for number in range(1, count + 1):
        paid = "令和8年2月30日" if number in bad else "令和8年4月15日"
        lines.append(
            f"412074,62{number:08d},,個人住民税,2026,2026,01,R08-{number:06d},{paid},"
            f"{1000 * number},{methods[(number - 1) % 3]},令和8年4月30日,令和8年4月16日"
        )
    lines.append(f"T,{count if declared is None else declared}")
    return ("\r\n".join(lines) + "\r\n").encode("cp932")


def shuno_config(tmp_path: Path, inbox: Path, outbound: dict[str, Any] | None = None) -> Path:
    folder = {
        "path": str(inbox),
        "service": "PaymentNotice",
        "tenant": "412074",
        "subject": "addresseeNumber",
        "encoding": "cp932",
    }
    return folder_config(
        tmp_path,
        folder,
        {"shuno": outbound} if outbound else None,
        system="shuno",
        mapping="shuno.yaml",
    )


def folders_once(data_dir: Path, config: Path) -> list[str]:
    """``renkei folders run --once``: where each file went."""
    env = {**os.environ, "RENKEI_DATA_DIR": str(data_dir), "RENKEI_CONFIG_DIR": str(config)}
    env.pop("RENKEI_DATABASE_URL", None)
    renkei = str(Path(sys.executable).with_name("renkei"))
    result = subprocess.run(
        [renkei, "folders", "run", "--once"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_cp932_csv_file_is_read_through_the_mapping_by_renkei_folders_run(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "in" / "shuno"
    config = shuno_config(tmp_path, inbox)
    data_dir = tmp_path / "data"
    assert folders_once(data_dir, config) == []  # creates the folders
    data = shuno_file(4, bad=(2,))
    data.decode("cp932")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    drop(inbox, "SHUNO001.csv", data)
    drop(inbox, "SHUNO002.csv", shuno_file(3, declared=2))
    assert folders_once(data_dir, config) == ["done/SHUNO001.csv", "error/SHUNO002.csv"]

    report = report_of(inbox / "done" / "SHUNO001.csv")
    assert report["extent"] == "differential"
    assert (report["records"], report["stored"], report["rejected"]) == (4, 3, 1)
    (error,) = report["errors"]
    assert error["record"] == 2 and error["findings"][0]["code"] == "RK-MAP004"
    refused = report_of(inbox / "error" / "SHUNO002.csv")["refused"]
    assert isinstance(refused, dict) and refused["code"] == "RK-FIL003"

    hub = open_hub(Settings(data_dir=data_dir), config)
    try:
        messages = stored(hub)  # records of different subjects: in lanes, any order
        methods = {values(m, "noticeNumber")[0]: values(m, "paymentMethod") for m in messages}
        assert methods == {"R08-000001": ["02"], "R08-000003": ["06"], "R08-000004": ["02"]}
        assert {values(m, "taxItem")[0] for m in messages} == {"01"}
        assert values(messages[0], "paymentDate") == ["2026-04-15"]
        assert destinations(hub) == ["tainou"] * 3 + ["zeimu"] * 3

        drop(inbox, "SHUNO001.csv", data)  # delivered again
        assert folders_once(data_dir, config) == ["done/SHUNO001.csv.1"]
        report = report_of(inbox / "done" / "SHUNO001.csv.1")
        assert (report["stored"], report["duplicates"], report["rejected"]) == (0, 3, 1)
        assert len(stored(hub)) == 3
    finally:
        hub.close()


# --- CSV out: 調定情報通知 to the 収納 vendor's outbound folder, one file per interval ----------


def levy_notices(hub: Hub, seeds: range) -> list[str]:
    """調定情報通知 from zeimu (routed to shuno and tainou); their messageIds."""
    sent = []
    for seed in seeds:
        message = hub.ingest(
            serialize(build_message(MessageSpec("LevyNotice", seed, town=TOWNS[0]))),
            adapter="rest",
            source_address="127.0.0.1",
        )
        assert message.ack is not None, message.findings
        sent.append(message.ack.message_id)
    return sent


def delivered_to_shuno(hub: Hub) -> int:
    with hub.store.sessions() as session:
        query = select(Delivery.id).where(
            Delivery.destination == "shuno", Delivery.state == "delivered"
        )
        return len(session.scalars(query).all())


def batches(watcher: FolderWatcher, outbox: Path) -> list[Path]:
    """One watcher pass (closes the batches that are due); the batch files there."""
    watcher.poll_once()
    return sorted(outbox.glob("*.csv"))


def test_deliveries_to_a_csv_destination_become_one_cp932_file_per_interval(
    tmp_path: Path, store_settings: Settings
) -> None:
    outbox = tmp_path / "out" / "shuno"
    outbound = {"path": str(outbox), "interval": "PT3S", "encoding": "cp932"}
    config = shuno_config(tmp_path, tmp_path / "in" / "shuno", outbound)
    hub = open_hub(store_settings, config)
    pool = hub.workers(1)
    pool.start()
    section = load_mapping(MAPPINGS / "shuno.yaml").section("LevyNotice", "inbound")
    assert section is not None
    try:
        watcher = FolderWatcher(hub)
        started = time.monotonic()
        first = levy_notices(hub, range(1, 4))
        wait_for(lambda: delivered_to_shuno(hub) == 3)
        if time.monotonic() - started < 1.5:  # the journal is younger than the interval
            watcher.poll_once()
            assert not list(outbox.glob("*.csv"))
        wait_for(lambda: len(batches(watcher, outbox)) == 1, timeout=10)
        (batch,) = batches(watcher, outbox)
        assert batch.name.startswith("LevyNotice_412066_")
        names = sorted(p.name for p in outbox.iterdir() if p.name != ".spool")
        assert names == [batch.name, f"{batch.name}.end", f"{batch.name}.ids"]  # no temp file
        ids = Path(f"{batch}.ids")
        end = Path(f"{batch}.end")
        assert batch.stat().st_mtime_ns <= ids.stat().st_mtime_ns <= end.stat().st_mtime_ns

        # the file: header (差分), the column names once, one line per delivery, trailer
        data = batch.read_bytes()
        lines = data.decode("cp932").split("\r\n")
        assert lines[0].startswith("H,2,") and lines[-2:] == ["T,3", ""]
        assert lines[1].startswith("団体コード,宛名番号,") and lines.count(lines[1]) == 1
        carried = ids.read_text().split()
        assert sorted(carried) == sorted(first)
        with hub.store.sessions() as session:
            bodies = {
                m.message_id: m
                for m in session.scalars(
                    select(StoredMessage).where(StoredMessage.message_id.in_(carried))
                )
            }
        # the .ids list is in record order: line i is the message of the i-th id
        for line, message_id in zip(lines[2:5], carried, strict=True):
            assert line.split(",")[7] == values(bodies[message_id], "noticeNumber")[0]

        # the receiver reads it back with the same conventions and mapping
        framed = unframe(data, FileRecords(), "cp932")
        assert (framed.extent.value, framed.declared) == ("differential", 3)
        translated = list(section.translate_records(framed.data))
        assert [t.output is not None for t in translated] == [True, True, True]

        # the next interval: a new file with only what came since
        second = levy_notices(hub, range(4, 6))
        wait_for(lambda: delivered_to_shuno(hub) == 5)
        wait_for(lambda: len(batches(watcher, outbox)) == 2, timeout=10)
        (later,) = set(batches(watcher, outbox)) - {batch}
        assert sorted(Path(f"{later}.ids").read_text().split()) == sorted(second)
        assert later.read_bytes().decode("cp932").split("\r\n")[-2] == "T,2"
    finally:
        pool.stop()
        hub.close()


def test_a_cp932_xml_file_declared_shift_jis_keeps_the_microsoft_characters(
    tmp_path: Path, tainou_inbox: Path
) -> None:
    config = tainou_config(tmp_path, tainou_inbox, encoding="cp932")
    hub = open_hub(Settings(data_dir=tmp_path / "data"), config)
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        data = xml_file(2, encoding="cp932")
        assert b'encoding="Shift_JIS"' in data and "髙".encode("cp932") in data
        drop(tainou_inbox, "TAINOU004.xml", data)
        (moved,) = watcher.poll_once()
        report = report_of(moved)
        assert moved.parent.name == "done" and (report["stored"], report["rejected"]) == (2, 0)
        assert [values(m, "name") for m in stored(hub)] == [["髙橋　美咲"]] * 2
    finally:
        hub.close()
