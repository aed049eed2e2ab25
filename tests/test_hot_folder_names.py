"""File names as staff and vendors write and read them: Japanese names in, whether UTF-8 or
the CP932 bytes a Windows share without the right character set writes; outbound batch names
with the Japan time (JST) of their header record."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bus.config.models import FieldLimits, FileRecords, OutboundFolder, System
from bus.folders.outbound import renderer
from bus.folders.spool import append, close_due
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.mapping.stage import outbound_body
from bus.settings import Settings
from bus.wareki import JST
from tests.support.folders import GOLDEN, folder_config, inbound_folder, nhi_file, report_of

pytestmark = pytest.mark.hotfolder

NAME = re.compile(r"NhiEligibilityNotice_412066_(\d{14})_[0-9a-f]{8}\.dat")


def test_a_batch_file_is_named_with_the_japan_time_of_its_header_record(tmp_path: Path) -> None:
    kokuho = System(
        id="kokuho", name="国保", mapping="kokuho.yaml", fields=FieldLimits(my_number=True)
    )
    standard = GOLDEN.with_name("NhiEligibilityNotice.outbound.full.input.xml").read_bytes()
    body = outbound_body(kokuho, "NhiEligibilityNotice", standard)
    before = datetime.now(JST).replace(microsecond=0)
    append(tmp_path, "NhiEligibilityNotice", "412066", "m1", body)
    after = datetime.now(JST)
    settings = OutboundFolder(path=str(tmp_path), encoding="cp932", records=FileRecords())
    (written,) = close_due(tmp_path, timedelta(0), renderer(kokuho, settings), ".end")

    named = NAME.fullmatch(written.name)
    assert named is not None, written.name
    stamp = named.group(1)
    # the header record H2 <JST time> and the name carry the same time
    assert written.read_bytes().split(b"\r\n")[0].startswith(f"H2 {stamp}".encode())
    created = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=JST)
    assert before <= created <= after


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "in" / "kokuho"


@pytest.fixture
def hub(tmp_path: Path, inbox: Path, store_settings: Settings) -> Iterator[Hub]:
    config = folder_config(tmp_path, inbound_folder(inbox))
    hub = Hub.open(store_settings.model_copy(update={"config_dir": config}))
    try:
        yield hub
    finally:
        hub.close()


def deliver(inbox: Path, name: bytes, count: int) -> None:
    """A data file and its end file, under name bytes as the share wrote them."""
    directory = os.fsencode(inbox)
    with open(directory + b"/" + name, "wb") as handle:
        handle.write(nhi_file(count))
    with open(directory + b"/" + name + b".end", "wb"):
        pass


def test_japanese_file_names_in_utf8_or_cp932_bytes_are_processed_and_reported(
    hub: Hub, inbox: Path
) -> None:
    watcher = FolderWatcher(hub)
    watcher.poll_once()  # creates the folder
    deliver(inbox, "国保異動_令和8年4月.dat".encode(), 2)
    deliver(inbox, "国保異動_CP932.dat".encode("cp932"), 3)
    watcher.poll_once()
    deliver(inbox, b"NHI002.dat", 1)  # a later file is not held up by the CP932 name
    watcher.poll_once()

    done = inbox / "done"
    assert report_of(done / "国保異動_令和8年4月.dat")["stored"] == 2
    assert report_of(done / "NHI002.dat")["stored"] == 1
    cp932 = os.fsdecode(os.fsencode(done) + b"/" + "国保異動_CP932.dat".encode("cp932"))
    report = report_of(Path(cp932))  # the file keeps its bytes; the report reads them
    assert (report["file"], report["stored"]) == ("国保異動_CP932.dat", 3)
    assert os.listdir(inbox / "work") == []
