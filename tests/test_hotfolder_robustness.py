"""File linkage as real vendor systems and offices use it: a file re-sent under the same name
while the first is still being processed, a folder that cannot be used next to good ones, a
UTF-8 file with a byte order mark, a file without header or trailer (the report must not
echo its records), and an outbound journal appended to after a torn append."""

from __future__ import annotations

import errno
import fcntl
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from bus.config.models import OutboundFolder, System
from bus.folders.outbound import renderer
from bus.folders.spool import append, close_due
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.settings import Settings
from bus.store.models import StoredMessage
from tests.support.folders import ROOT, drop, folder_config, inbound_folder, nhi_file, report_of

pytestmark = pytest.mark.hotfolder


def stored(hub: Hub) -> int:
    with hub.store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(StoredMessage)) or 0)


def open_hub(settings: Settings, config: Path) -> Hub:
    return Hub.open(settings.model_copy(update={"config_dir": config}))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "in" / "kokuho"


@pytest.fixture
def hub(tmp_path: Path, inbox: Path) -> Iterator[Hub]:
    hub = open_hub(
        Settings(data_dir=tmp_path / "data"), folder_config(tmp_path, inbound_folder(inbox))
    )
    try:
        yield hub
    finally:
        hub.close()


def test_a_file_resent_under_the_same_name_while_the_first_is_in_work_is_not_lost(
    hub: Hub, inbox: Path
) -> None:
    """Another watcher (an HTTP worker of ``renkei serve --http-workers 2``, or ``renkei
    folders run`` beside serve) holds work/NAME; the vendor sends a corrected NAME."""
    watcher = FolderWatcher(hub)
    watcher.poll_once()
    first, second = nhi_file(2), nhi_file(5)
    (inbox / "work" / "NHI.dat").write_bytes(first)  # taken by the other watcher
    with (inbox / "work" / ".NHI.dat.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # …which is processing it
        drop(inbox, "NHI.dat", second)
        assert watcher.poll_once() == []
        assert (inbox / "work" / "NHI.dat").read_bytes() == first  # not overwritten
        fcntl.flock(held, fcntl.LOCK_UN)
    moved = watcher.poll_once()  # the first, from work/, then the second
    moved += watcher.poll_once()
    assert [path.name for path in moved] == ["NHI.dat", "NHI.dat.1"]
    assert [report_of(path)["records"] for path in moved] == [2, 5]
    assert [path.read_bytes() for path in moved] == [first, second]
    assert stored(hub) == 7  # another file's records are other messages (docs/file-linkage.md)


def two_folder_config(tmp_path: Path, broken: Path, inbox: Path) -> Path:
    config = folder_config(tmp_path, inbound_folder(broken))
    path = config / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for entry in document["systems"]:
        if entry["id"] == "kokuho":
            second = inbound_folder(inbox)
            second["tenant"] = "412074"
            entry["file_linkage"]["inbound"].append(second)
        if entry["id"] == "shuno":  # an outbound folder after the broken one
            entry.pop("endpoint")
            entry["mapping"] = "shuno.yaml"
            entry["file_linkage"] = {"outbound": {"path": str(tmp_path / "out" / "shuno")}}
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    return config


def test_a_folder_that_cannot_be_used_does_not_stop_the_other_folders(
    tmp_path: Path, inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "mount"
    blocker.write_bytes(b"")  # a file where the share should be mounted: no folder there
    broken = blocker / "kokuho"
    hub = open_hub(Settings(data_dir=tmp_path / "data"), two_folder_config(tmp_path, broken, inbox))
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        drop(inbox, "NHI.dat", nhi_file(3))
        (moved,) = watcher.poll_once()
        assert moved == inbox / "done" / "NHI.dat" and report_of(moved)["stored"] == 3
        assert (tmp_path / "out" / "shuno").is_dir()  # the outbound folder was served too
        logged = [r.getMessage() for r in caplog.records if "RK-FIL006" in r.getMessage()]
        assert logged and str(broken) in logged[0]
    finally:
        hub.close()


HOUMU_GOLDEN = ROOT / "mappings" / "golden" / "houmu" / "RegistrationNotice.inbound.full.input.csv"


def houmu_lines(count: int) -> list[str]:
    columns, line = HOUMU_GOLDEN.read_text(encoding="utf-8").splitlines()[:2]
    records = []
    for number in range(1, count + 1):
        fields = line.split(",")
        fields[1] = f"900{number:02d}"
        records.append(",".join(fields))
    return ["H,1,20260401", columns, *records, f"T,{count}"]


@pytest.fixture
def houmu(tmp_path: Path) -> Iterator[tuple[Hub, Path]]:
    inbox = tmp_path / "in" / "houmu"
    folder = {"path": str(inbox), "service": "RegistrationNotice", "tenant": "412066"}
    config = folder_config(tmp_path, folder, system="houmu", mapping="houmu.yaml")
    hub = open_hub(Settings(data_dir=tmp_path / "data"), config)
    try:
        FolderWatcher(hub).poll_once()
        yield hub, inbox
    finally:
        hub.close()


def test_a_utf8_file_with_a_byte_order_mark_is_read(houmu: tuple[Hub, Path]) -> None:
    """Windows tools (Excel's "CSV UTF-8", Notepad) write a BOM before the header record."""
    hub, inbox = houmu
    drop(inbox, "TOUKI.csv", b"\xef\xbb\xbf" + "\r\n".join(houmu_lines(2)).encode() + b"\r\n")
    (moved,) = FolderWatcher(hub).poll_once()
    report = report_of(moved)
    assert moved.parent.name == "done", report["refused"]
    assert (report["records"], report["stored"], report["extent"]) == (2, 2, "full")


@pytest.mark.parametrize("missing", ["header", "trailer"])
def test_a_missing_header_or_trailer_is_reported_without_the_records_content(
    houmu: tuple[Hub, Path], missing: str
) -> None:
    hub, inbox = houmu
    lines = houmu_lines(1)
    # a record where the header should be, or as the last line
    lines = lines[2:] if missing == "header" else lines[:-1]
    drop(inbox, "TOUKI.csv", "\r\n".join(lines).encode() + b"\r\n")
    (moved,) = FolderWatcher(hub).poll_once()
    assert moved.parent.name == "error"
    text = Path(f"{moved}.report.json").read_text(encoding="utf-8")
    report = json.loads(text)
    assert report["refused"]["code"] == ("RK-FIL001" if missing == "header" else "RK-FIL002")
    record = lines[0] if missing == "header" else lines[-1]
    for value in record.split(",")[:3]:  # 受付年月日, 受付番号, 登記の目的: not echoed
        assert value not in text
    assert report["sha256"]  # the refused file is identified by its digest too


def test_an_append_after_a_torn_append_keeps_every_acknowledged_delivery(
    tmp_path: Path,
) -> None:
    """A process killed (or a disk full) mid-append leaves a torn entry; the deliveries
    acknowledged after it must all reach the batch file."""
    folder = tmp_path / "out"
    append(folder, "LevyNotice", "412066", "id-1", b"<a>1</a>")
    journal = folder / ".spool" / "LevyNotice_412066.journal"
    with journal.open("ab") as handle:
        handle.write(b"id-2 100\n<a>2 partial")  # killed mid-append: never acknowledged
    append(folder, "LevyNotice", "412066", "id-2", b"<a>2</a>")  # the retry
    append(folder, "LevyNotice", "412066", "id-3", b"<a>3</a>")
    render = renderer(System(id="shuno", name="収納"), OutboundFolder(path=str(folder)))
    (written,) = close_due(folder, timedelta(0), render, ".end")
    assert Path(f"{written}.ids").read_text() == "id-1\nid-2\nid-3\n"
    data = written.read_bytes()
    assert b"partial" not in data and b'count="3"' in data


def test_a_journal_whose_first_append_was_torn_is_started_again(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    journal = folder / ".spool" / "LevyNotice_412066.journal"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b"RKJ1 LevyNotice_412066_2026")  # killed while creating it
    append(folder, "LevyNotice", "412066", "id-1", b"<a>1</a>")
    render = renderer(System(id="shuno", name="収納"), OutboundFolder(path=str(folder)))
    (written,) = close_due(folder, timedelta(0), render, ".end")
    assert Path(f"{written}.ids").read_text() == "id-1\n"


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from bus.folders.spool import append
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
folder = Path(sys.argv[1])
size = (folder / ".spool" / "LevyNotice_412066.journal").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, size + 4096))
try:
    append(folder, "LevyNotice", "412066", "id-2", b"<a>" + b"2" * 100_000 + b"</a>")
except OSError as error:
    print(error.errno)
"""


def test_an_append_that_fails_on_a_full_disk_does_not_hide_the_later_ones(
    tmp_path: Path,
) -> None:
    """The file size limit of a real process stands in for a full disk: the write stops
    part-way with an error (EFBIG as ENOSPC would), the delivery is not acknowledged."""
    folder = tmp_path / "out"
    append(folder, "LevyNotice", "412066", "id-1", b"<a>1</a>")
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(folder)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == str(errno.EFBIG), result.stderr
    append(folder, "LevyNotice", "412066", "id-3", b"<a>3</a>")  # space again
    render = renderer(System(id="shuno", name="収納"), OutboundFolder(path=str(folder)))
    (written,) = close_due(folder, timedelta(0), render, ".end")
    assert Path(f"{written}.ids").read_text() == "id-1\nid-3\n"
