"""Hot folders as vendors' tools and staff's PCs really fill them (``trigger: stable``, the
folder watched by size and time): a file written slowly with pauses longer than
``stable_for``, a file another process holds locked (as Samba locks a file a Windows client
has locked), temporary names renamed when complete, Office owner files and Windows/macOS
folder files beside the deliveries."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.settings import Settings
from tests.support.folders import folder_config, inbound_folder, nhi_file, report_of
from tests.support.receivers import wait_for
from tests.test_hotfolder_formats import tainou_config, xml_file

pytestmark = pytest.mark.hotfolder

NOT_DELIVERIES = (
    "~$国保異動.xlsx",  # Excel's owner file while staff have the workbook open
    "Thumbs.db",
    "desktop.ini",
    ".DS_Store",
    "NHI.dat.filepart",  # WinSCP uploading
    "NHI.DAT.TMP",
)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "in" / "kokuho"


@pytest.fixture
def stable(tmp_path: Path, inbox: Path) -> Iterator[Hub]:
    config = folder_config(tmp_path, inbound_folder(inbox, trigger="stable", stable_for="PT0.2S"))
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        FolderWatcher(hub).poll_once()  # creates the folders
        yield hub
    finally:
        hub.close()


def settled(watcher: FolderWatcher, seconds: float) -> list[Path]:
    """Polls for a little longer than ``seconds``; where the files taken went."""
    moved: list[Path] = []
    start = time.monotonic()

    def polled() -> bool:
        moved.extend(watcher.poll_once())
        return bool(moved) or time.monotonic() - start > seconds

    wait_for(polled)
    return moved + watcher.poll_once()


def test_temporary_owner_and_folder_files_are_left_alone(stable: Hub, inbox: Path) -> None:
    watcher = FolderWatcher(stable)
    for name in NOT_DELIVERIES:
        (inbox / name).write_bytes(b"not a delivery")
    writing = inbox / "NHI001.dat.tmp"  # the vendor writes under a temporary name…
    writing.write_bytes(nhi_file(2)[:300])
    assert settled(watcher, 0.6) == []
    for name in (*NOT_DELIVERIES, writing.name):
        assert (inbox / name).exists(), name  # not taken: the vendor's rename still works
    assert watcher.watching() == 0
    writing.write_bytes(nhi_file(2))
    writing.rename(inbox / "NHI001.dat")  # …and renames it when complete
    (moved,) = settled(watcher, 0.6)
    assert moved == inbox / "done" / "NHI001.dat" and report_of(moved)["stored"] == 2
    assert sorted(p.name for p in (inbox / "error").iterdir()) == []


def written_with_a_pause(watcher: FolderWatcher, target: Path, data: bytes) -> list[Path]:
    """The vendor writes half the file, pauses (longer than ``stable_for``) with the file
    open, then writes the rest and closes it; where the watcher took it meanwhile."""
    with target.open("wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        taken = settled(watcher, 0.8)
        handle.write(data[len(data) // 2 :])
    return taken


def test_a_file_written_with_a_long_pause_is_taken_only_once_complete(
    stable: Hub, inbox: Path
) -> None:
    watcher = FolderWatcher(stable)
    target = inbox / "NHI001.dat"
    assert written_with_a_pause(watcher, target, nhi_file(40)) == []
    assert target.exists() and list((inbox / "error").iterdir()) == []
    (moved,) = settled(watcher, 0.6)
    assert moved == inbox / "done" / "NHI001.dat" and report_of(moved)["stored"] == 40


def test_an_xml_file_written_with_a_long_pause_is_taken_only_once_complete(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "in" / "tainou"
    config = tainou_config(tmp_path, inbox)
    systems = config / "systems.yaml"
    document = yaml.safe_load(systems.read_text(encoding="utf-8"))
    (tainou,) = (system for system in document["systems"] if system["id"] == "tainou")
    tainou["file_linkage"]["inbound"][0].update(trigger="stable", stable_for="PT0.2S")
    systems.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        watcher = FolderWatcher(hub)
        watcher.poll_once()
        target = inbox / "TAINOU001.xml"
        assert written_with_a_pause(watcher, target, xml_file(6)) == []
        (moved,) = settled(watcher, 0.6)
        assert moved == inbox / "done" / "TAINOU001.xml" and report_of(moved)["stored"] == 6
    finally:
        hub.close()


def test_a_file_whose_trailer_never_comes_is_refused_once_old_enough(
    stable: Hub, inbox: Path
) -> None:
    target = inbox / "NHI002.dat"
    target.write_bytes(nhi_file(3)[:500])  # the vendor's job died mid-file
    watcher = FolderWatcher(stable, unfinished_age=timedelta(seconds=2))  # 10 min in service
    assert settled(watcher, 0.6) == []
    (moved,) = settled(watcher, 3.0)  # unchanged for unfinished_age
    assert moved == inbox / "error" / "NHI002.dat"
    assert report_of(moved)["refused"]["code"] == "RK-FIL002"


LOCKER = """
import fcntl, sys
with open(sys.argv[1], "r+b") as handle:
    fcntl.lockf(handle, fcntl.LOCK_EX)  # a POSIX lock: what Samba takes for a Windows client
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_file_another_process_holds_locked_is_taken_only_once_released(
    stable: Hub, inbox: Path
) -> None:
    target = inbox / "NHI003.dat"
    target.write_bytes(nhi_file(2))  # complete, but the writer still holds its lock
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        watcher = FolderWatcher(stable)
        assert settled(watcher, 0.6) == []
        assert target.exists()
    finally:
        locker.communicate("", timeout=10)  # the writer closes the file
    (moved,) = settled(watcher, 0.6)
    assert moved == inbox / "done" / "NHI003.dat" and report_of(moved)["stored"] == 2
