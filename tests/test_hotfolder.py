"""File linkage: hot folders in (complete files only, header/trailer checked, records through
the pipeline, idempotent, resumable after a kill) and batch files out (atomic, end file last,
every messageId carried)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select

from bus.catalogue import NS_ENVELOPE
from bus.config.models import OutboundFolder
from bus.folders.outbound import renderer
from bus.folders.spool import Batch, SpooledRecord, append, close_due
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.mapping.stage import outbound_body
from bus.settings import Settings
from bus.store.models import Delivery, StoredMessage
from tests.support.folders import folder_config, inbound_folder, nhi_file, record
from tests.support.receivers import wait_for

pytestmark = pytest.mark.hotfolder


def count(hub: Hub, model: type[StoredMessage] | type[Delivery]) -> int:
    with hub.store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def report_of(path: Path) -> dict[str, object]:
    report = json.loads(Path(f"{path}.report.json").read_text(encoding="utf-8"))
    assert isinstance(report, dict)
    return report


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "in" / "kokuho"


def open_hub(settings: Settings, config: Path) -> Hub:
    return Hub.open(settings.model_copy(update={"config_dir": config}))


@pytest.fixture
def hub(tmp_path: Path, inbox: Path, store_settings: Settings) -> Iterator[Hub]:
    hub = open_hub(store_settings, folder_config(tmp_path, inbound_folder(inbox)))
    try:
        yield hub
    finally:
        hub.close()


def test_a_file_without_its_end_file_is_never_taken(hub: Hub, inbox: Path) -> None:
    watcher = FolderWatcher(hub)
    watcher.poll_once()  # creates the folders
    (inbox / "NHI001.dat").write_bytes(nhi_file(3))
    assert watcher.poll_once() == []
    assert (inbox / "NHI001.dat").exists() and count(hub, StoredMessage) == 0

    (inbox / "NHI001.dat.end").write_bytes(b"")
    (moved,) = watcher.poll_once()
    assert moved == inbox / "done" / "NHI001.dat"
    assert Path(f"{moved}.end").exists() and not (inbox / "NHI001.dat").exists()
    report = report_of(moved)
    assert (report["records"], report["stored"], report["rejected"]) == (3, 3, 0)
    assert report["extent"] == "differential"
    assert count(hub, StoredMessage) == 3
    assert count(hub, Delivery) == 6  # zeimu and shuno subscribe to 国保資格異動通知


def test_bad_records_are_reported_good_ones_stored_and_redelivery_stores_nothing(
    hub: Hub, inbox: Path
) -> None:
    watcher = FolderWatcher(hub)
    watcher.poll_once()
    data = nhi_file(4, bad=(2,))
    for name in ("NHI002.dat", "NHI002.dat.end"):
        (inbox / name).write_bytes(data if name.endswith(".dat") else b"")
    (moved,) = watcher.poll_once()
    report = report_of(moved)
    assert (report["stored"], report["rejected"]) == (3, 1)
    errors = report["errors"]
    assert isinstance(errors, list) and errors[0]["record"] == 2
    assert errors[0]["findings"][0]["code"].startswith("RK-")

    # the same file delivered again: recognised record by record, kept beside the first
    (inbox / "NHI002.dat").write_bytes(data)
    (inbox / "NHI002.dat.end").write_bytes(b"")
    (again,) = watcher.poll_once()
    assert again == inbox / "done" / "NHI002.dat.1"
    report = report_of(again)
    assert (report["stored"], report["duplicates"], report["rejected"]) == (0, 3, 1)
    assert count(hub, StoredMessage) == 3


def test_trailer_count_mismatch_sends_the_whole_file_to_error(hub: Hub, inbox: Path) -> None:
    watcher = FolderWatcher(hub)
    watcher.poll_once()
    (inbox / "NHI003.dat").write_bytes(nhi_file(3, declared=5))
    (inbox / "NHI003.dat.end").write_bytes(b"")
    (moved,) = watcher.poll_once()
    assert moved == inbox / "error" / "NHI003.dat"
    assert Path(f"{moved}.end").exists()
    refused = report_of(moved)["refused"]
    assert isinstance(refused, dict)
    assert refused["code"] == "RK-FIL003" and "5" in refused["message_ja"]
    assert count(hub, StoredMessage) == 0


@pytest.mark.parametrize("tail", [b"\x1a", b"\r\n\x1a"])
def test_a_dos_end_of_file_mark_after_the_trailer_is_dropped(
    hub: Hub, inbox: Path, tail: bytes
) -> None:
    """Offices' tools still end a file with 0x1A (MS-DOS's end-of-file mark): one after the
    trailer is dropped, as the batch import and the mapping reader drop it."""
    watcher = FolderWatcher(hub)
    watcher.poll_once()
    (inbox / "NHI009.dat").write_bytes(nhi_file(3).rstrip(b"\r\n") + tail)
    (inbox / "NHI009.dat.end").write_bytes(b"")
    (moved,) = watcher.poll_once()
    assert moved == inbox / "done" / "NHI009.dat", report_of(moved)
    assert report_of(moved)["stored"] == 3
    # one mark only: two are not an office's file end but damage
    (inbox / "NHI010.dat").write_bytes(nhi_file(3) + b"\x1a\x1a")
    (inbox / "NHI010.dat.end").write_bytes(b"")
    (refused,) = watcher.poll_once()
    assert refused == inbox / "error" / "NHI010.dat"


def test_header_without_a_known_flag_is_refused(hub: Hub, inbox: Path) -> None:
    watcher = FolderWatcher(hub)
    watcher.poll_once()
    (inbox / "NHI004.dat").write_bytes(nhi_file(1).replace(b"H2", b"H9", 1))
    (inbox / "NHI004.dat.end").write_bytes(b"")
    (moved,) = watcher.poll_once()
    refused = report_of(moved)["refused"]
    assert isinstance(refused, dict) and refused["code"] == "RK-FIL004"
    assert moved.parent.name == "error"


def test_stable_trigger_takes_a_file_only_once_its_size_has_settled(
    tmp_path: Path, inbox: Path
) -> None:
    config = folder_config(tmp_path, inbound_folder(inbox, trigger="stable", stable_for="PT0.3S"))
    hub = open_hub(Settings(data_dir=tmp_path / "data"), config)
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        data = nhi_file(2)
        target = inbox / "NHI005.dat"
        target.write_bytes(data[:300])  # a vendor still writing
        assert watcher.poll_once() == []
        time.sleep(0.2)
        with target.open("ab") as handle:
            handle.write(data[300:])
        assert watcher.poll_once() == []  # it grew: wait again
        time.sleep(0.4)
        (moved,) = watcher.poll_once()
        assert report_of(moved)["stored"] == 2
    finally:
        hub.close()


def test_a_hub_killed_mid_file_resumes_without_duplicates(tmp_path: Path, inbox: Path) -> None:
    records = 1500
    config = folder_config(tmp_path, inbound_folder(inbox))
    data_dir = tmp_path / "data"
    env = {**os.environ, "RENKEI_DATA_DIR": str(data_dir), "RENKEI_CONFIG_DIR": str(config)}
    env.pop("RENKEI_DATABASE_URL", None)
    hub = open_hub(Settings(data_dir=data_dir), config)
    try:
        FolderWatcher(hub).poll_once()
        (inbox / "NHI006.dat").write_bytes(nhi_file(records))
        (inbox / "NHI006.dat.end").write_bytes(b"")
        renkei = str(Path(sys.executable).with_name("renkei"))
        process = subprocess.Popen([renkei, "folders", "run"], env=env, start_new_session=True)
        try:
            wait_for(lambda: count(hub, StoredMessage) >= 100, timeout=60)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        partial = count(hub, StoredMessage)
        assert 100 <= partial < records, "killed too late to test a resume"
        assert (inbox / "work" / "NHI006.dat").exists()

        (moved,) = FolderWatcher(hub).poll_once()
        report = report_of(moved)
        assert report["rejected"] == 0
        assert report["stored"] + report["duplicates"] == records  # type: ignore[operator]
        assert report["duplicates"] >= partial  # type: ignore[operator]
        assert count(hub, StoredMessage) == records
        with hub.store.sessions() as session:
            for destination in ("zeimu", "shuno"):
                sequences = session.scalars(
                    select(Delivery.sequence)
                    .where(Delivery.destination == destination)
                    .order_by(Delivery.sequence)
                ).all()
                assert list(sequences) == list(range(1, records + 1))  # no gap, no duplicate
    finally:
        hub.close()


# --- outbound -------------------------------------------------------------------------------


def test_deliveries_to_a_file_destination_become_one_atomic_batch_with_its_end_file(
    tmp_path: Path, inbox: Path, store_settings: Settings
) -> None:
    outbox = tmp_path / "out" / "shuno"
    config = folder_config(
        tmp_path, inbound_folder(inbox), {"shuno": {"path": str(outbox), "interval": "PT0S"}}
    )
    hub = open_hub(store_settings, config)
    pool = hub.workers(1)
    pool.start()
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        (inbox / "NHI007.dat").write_bytes(nhi_file(5))
        (inbox / "NHI007.dat.end").write_bytes(b"")
        watcher.poll_once()

        def delivered() -> int:
            with hub.store.sessions() as session:
                query = select(func.count()).where(
                    Delivery.destination == "shuno", Delivery.state == "delivered"
                )
                return int(session.scalar(query) or 0)

        wait_for(lambda: delivered() == 5)
        assert not list(outbox.glob("*.xml"))  # still in the journal until closed
        watcher.poll_once()
        (batch,) = outbox.glob("*.xml")
        assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == [
            batch.name,
            f"{batch.name}.end",
            f"{batch.name}.ids",
        ]
        ids = Path(f"{batch}.ids").read_text().split()
        with hub.store.sessions() as session:
            stored = set(session.scalars(select(StoredMessage.message_id)))
        assert len(ids) == 5 and set(ids) == stored
        root = etree.fromstring(batch.read_bytes())
        assert root.get("count") == "5" and root.get("flag") == "2"
        carried = [e.text for e in root.iter(f"{{{NS_ENVELOPE}}}messageId")]
        assert carried == ids
    finally:
        pool.stop()
        hub.close()


def test_closing_a_batch_survives_a_torn_append_and_a_crash_after_writing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "out"
    settings = OutboundFolder(path=str(folder), interval=timedelta(0))
    append(folder, "LevyNotice", "412066", "id-1", b"<a/>")
    append(folder, "LevyNotice", "412066", "id-1", b"<a/>")  # redelivered after a crash
    journal = folder / ".spool" / "LevyNotice_412066.journal"
    with journal.open("ab") as handle:
        handle.write(b"id-2 100\n<partial")  # a process killed mid-append
    snapshot = journal.read_bytes()
    from bus.config.models import System

    render = renderer(System(id="shuno", name="収納"), settings)
    (written,) = close_due(folder, timedelta(0), render, ".end")
    assert Path(f"{written}.ids").read_text() == "id-1\n"
    assert b"<partial" not in written.read_bytes()
    # a crash after the batch was complete but before the journal went: not written twice
    journal.write_bytes(snapshot)
    assert close_due(folder, timedelta(0), render, ".end") == [written]
    assert not journal.exists() and len(list(folder.glob("*.xml"))) == 1


def test_a_fixed_width_destination_gets_header_records_and_trailer_in_its_layout(
    tmp_path: Path,
) -> None:
    from bus.config.models import FieldLimits, FileRecords, System
    from tests.support.folders import GOLDEN

    # entitled to 個人番号 (番号法), as in samples/config: the golden record carries it
    kokuho = System(
        id="kokuho", name="国保", mapping="kokuho.yaml", fields=FieldLimits(my_number=True)
    )
    standard = GOLDEN.with_name("NhiEligibilityNotice.outbound.full.input.xml").read_bytes()
    expected = GOLDEN.with_name("NhiEligibilityNotice.outbound.full.expected.dat").read_bytes()
    body = outbound_body(kokuho, "NhiEligibilityNotice", standard)
    assert body == expected
    settings = OutboundFolder(path=str(tmp_path), encoding="cp932", records=FileRecords())
    batch = Batch(
        "NhiEligibilityNotice",
        "412066",
        "b1",
        datetime(2026, 4, 1, tzinfo=UTC),
        [SpooledRecord("m1", body), SpooledRecord("m2", body)],
    )
    data, extension = renderer(kokuho, settings)(batch)
    lines = data.split(b"\r\n")
    assert extension == ".dat" and lines[-1] == b""
    assert lines[0].startswith(b"H2 20260401") and len(lines[0]) == 220
    assert lines[1] == lines[2] == expected.rstrip(b"\r\n")
    assert lines[3] == b"T000000002".ljust(220) and len(lines) == 5
    assert record(1)[:6] == b"412066"


# --- configuration --------------------------------------------------------------------------


def test_the_loader_reports_folder_mistakes_with_file_and_line(tmp_path: Path) -> None:
    from bus.config.loader import ConfigError, load_config_dir

    config = folder_config(
        tmp_path,
        inbound_folder(tmp_path / "in", service="LevyNotice", colour="blue"),
        {"shuno": {"path": str(tmp_path / "out"), "interval": "PT1M"}},
    )
    with pytest.raises(ConfigError) as raised:
        load_config_dir(config)
    (problem,) = raised.value.problems
    assert problem.startswith("systems.yaml:") and "unknown field 'colour'" in problem

    config = folder_config(tmp_path / "b", inbound_folder(tmp_path / "in", service="LevyNotice"))
    with pytest.raises(ConfigError) as raised:
        load_config_dir(config)
    assert any("no access rule to send LevyNotice" in p for p in raised.value.problems)
    assert any("no inbound section for LevyNotice" in p for p in raised.value.problems)


def test_an_outbound_folder_is_the_file_endpoint(tmp_path: Path) -> None:
    from bus.config.loader import load_config_dir

    out = tmp_path / "out"
    config = folder_config(tmp_path, inbound_folder(tmp_path / "in"), {"shuno": {"path": str(out)}})
    shuno = next(s for s in load_config_dir(config).systems if s.id == "shuno")
    assert shuno.endpoint is not None and shuno.endpoint.transport == "file"
    assert shuno.endpoint.url == str(out)


def test_renkei_serve_watches_the_hot_folders_in_process(tmp_path: Path, inbox: Path) -> None:
    from tests.support.hub_server import hub_server

    config = folder_config(tmp_path, inbound_folder(inbox, poll_interval="PT0.2S"))
    with hub_server(tmp_path, config_source=config):
        wait_for(lambda: (inbox / "done").is_dir())
        (inbox / "NHI008.dat").write_bytes(nhi_file(2))
        (inbox / "NHI008.dat.end").write_bytes(b"")
        wait_for(lambda: Path(f"{inbox}/done/NHI008.dat.report.json").exists())
    assert report_of(inbox / "done" / "NHI008.dat")["stored"] == 2
