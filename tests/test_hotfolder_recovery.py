"""Hot folders when things go wrong: a file the hub cannot read (retried with a back-off when
the error may pass, moved to ``error/`` with its report when it will not), a watcher killed
between moving a file and writing its report, the physical line of each refused record, and
``trigger: stable`` with a file created empty (and files that vanish before they settle)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.settings import Settings
from bus.store.models import Delivery, StoredMessage
from tests.support.folders import ROOT, drop, folder_config, inbound_folder, nhi_file, report_of
from tests.support.receivers import wait_for

pytestmark = pytest.mark.hotfolder


def stored(hub: Hub) -> int:
    with hub.store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(StoredMessage)) or 0)


def open_hub(data_dir: Path, config: Path) -> Hub:
    return Hub.open(Settings(data_dir=data_dir, config_dir=config))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "in" / "kokuho"


@pytest.fixture
def hub(tmp_path: Path, inbox: Path) -> Iterator[Hub]:
    hub = open_hub(tmp_path / "data", folder_config(tmp_path, inbound_folder(inbox)))
    try:
        FolderWatcher(hub).poll_once()  # creates the folders
        yield hub
    finally:
        hub.close()


def names(directory: Path) -> list[str]:
    """The files an operator sees (dot-files are the watcher's own)."""
    return sorted(
        p.name for p in directory.iterdir() if not p.name.startswith(".") and not p.is_dir()
    )


def unreadable(path: Path, error: int) -> None:
    """A path whose read fails for real, even for root: a kernel file that refuses reading
    (/proc/self/mem at offset 0: EIO; /proc/self/clear_refs is write-only: EINVAL)."""
    target = {errno.EIO: "/proc/self/mem", errno.EINVAL: "/proc/self/clear_refs"}[error]
    try:
        Path(target).read_bytes()
    except OSError as failure:
        if failure.errno != error:  # pragma: no cover - another kernel
            pytest.skip(f"{target} fails with {failure.errno} here")
    else:  # pragma: no cover
        pytest.skip(f"{target} is readable here")
    path.symlink_to(target)


# --- 1. a file the hub cannot read ----------------------------------------------------------


def test_a_file_that_cannot_be_read_for_good_goes_to_error_with_its_report(
    hub: Hub, inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreadable(inbox / "BROKEN.dat", errno.EINVAL)
    (inbox / "BROKEN.dat.end").write_bytes(b"")
    drop(inbox, "NHI.dat", nhi_file(2))  # the folder is served meanwhile
    moved = FolderWatcher(hub).poll_once()
    assert sorted(path.relative_to(inbox).as_posix() for path in moved) == [
        "done/NHI.dat",
        "error/BROKEN.dat",
    ]
    assert names(inbox / "error") == ["BROKEN.dat", "BROKEN.dat.end", "BROKEN.dat.report.json"]
    report = report_of(inbox / "error" / "BROKEN.dat")
    refused = report["refused"]
    assert refused["code"] == "RK-FIL008" and "EINVAL" in refused["message_en"]
    assert "EINVAL" in refused["message_ja"] and report["sha256"] is None
    assert names(inbox / "work") == [] and stored(hub) == 2
    assert not [r for r in caplog.records if r.exc_info]  # a finding, not a traceback
    assert [r for r in caplog.records if "RK-FIL008" in r.getMessage()]


def test_a_file_that_cannot_be_read_for_now_is_retried_with_a_back_off_logged_once(
    hub: Hub, inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreadable(inbox / "NHI.dat", errno.EIO)
    (inbox / "NHI.dat.end").write_bytes(b"")
    watcher = FolderWatcher(hub, read_retry=timedelta(seconds=0.3))
    assert watcher.poll_once() == []
    failed = time.monotonic()
    for _ in range(5):
        assert watcher.poll_once() == []  # backing off: not read again yet
    assert names(inbox / "work") == ["NHI.dat", "NHI.dat.end"]
    logged = [r for r in caplog.records if "RK-FIL007" in r.getMessage()]
    assert len(logged) == 1 and "EIO" in logged[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]

    # the share recovers: the same file is readable again
    (inbox / "work" / "NHI.dat").unlink()
    (inbox / "work" / "NHI.dat").write_bytes(nhi_file(3))
    moved: list[Path] = []
    wait_for(lambda: bool(moved.extend(watcher.poll_once()) or moved), timeout=10)
    assert time.monotonic() - failed >= 0.3  # not before the back-off
    assert moved == [inbox / "done" / "NHI.dat"] and report_of(moved[0])["stored"] == 3
    assert len([r for r in caplog.records if "RK-FIL007" in r.getMessage()]) == 1


def test_a_file_that_stays_unreadable_is_given_up_and_moved_to_error(
    hub: Hub, inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreadable(inbox / "NHI.dat", errno.EIO)
    (inbox / "NHI.dat.end").write_bytes(b"")
    watcher = FolderWatcher(hub, read_retry=timedelta(0), read_give_up=timedelta(seconds=0.3))
    assert watcher.poll_once() == []
    moved: list[Path] = []
    wait_for(lambda: bool(moved.extend(watcher.poll_once()) or moved), timeout=10)
    assert moved == [inbox / "error" / "NHI.dat"]
    refused = report_of(moved[0])["refused"]
    assert refused["code"] == "RK-FIL008" and "EIO" in refused["message_en"]
    assert len([r for r in caplog.records if "RK-FIL007" in r.getMessage()]) == 1
    assert names(inbox / "work") == []


# --- 2. a kill between moving the file and writing its report -------------------------------

KILLED = """
import os, signal, sys, traceback
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.settings import Settings


def watch(inbox: str, kill_at: int) -> None:
    seen = 0

    def hook(event: str, args: tuple) -> None:
        nonlocal seen
        if event in ("os.rename", "os.link", "os.remove") and str(args[0]).startswith(inbox):
            seen += 1
            if seen == kill_at:  # killed just before this move (or removal) in the inbox
                os.kill(os.getpid(), signal.SIGKILL)

    hub = Hub.open(Settings())
    sys.addaudithook(hook)
    FolderWatcher(hub).poll_once()
    print("finished", seen, file=sys.stderr)


# One watcher process per request, forked from this one (the imports are paid once): a
# request is a line "inbox TAB data dir TAB config dir TAB kill_at"; the answer is the
# watcher's exit code (-9: killed).
for request in sys.stdin:
    inbox, data_dir, config_dir, kill_at = request.rstrip("\\n").split("\\t")
    pid = os.fork()
    if pid == 0:
        os.environ.update(RENKEI_DATA_DIR=data_dir, RENKEI_CONFIG_DIR=config_dir)
        code = 0
        try:
            watch(inbox, int(kill_at))
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.fixture
def killable_watchers() -> Iterator[subprocess.Popen[str]]:
    """The process that forks a watcher (a process of its own, SIGKILLed at the chosen move)
    for each request; the embedded store, whatever the environment says."""
    env = {k: v for k, v in os.environ.items() if k != "RENKEI_DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with process:  # closes its pipes
        try:
            yield process
        finally:
            assert process.stdin is not None
            process.stdin.close()  # the end of the requests: it exits
            process.wait(timeout=30)


def run_watcher(
    watchers: subprocess.Popen[str], inbox: Path, data_dir: Path, config: Path, kill_at: int
) -> int:
    """One watcher pass over ``inbox`` killed just before its ``kill_at``-th move; its exit
    code (0: it finished first, -9: killed)."""
    assert watchers.stdin is not None and watchers.stdout is not None
    watchers.stdin.write(f"{inbox}\t{data_dir}\t{config}\t{kill_at}\n")
    watchers.stdin.flush()
    answer = watchers.stdout.readline()
    assert answer, f"the forking process ended ({watchers.poll()})"
    return int(answer)


def test_a_watcher_killed_at_any_move_leaves_the_file_in_work_or_with_its_report(
    tmp_path: Path, killable_watchers: subprocess.Popen[str]
) -> None:
    """SIGKILL just before each rename, link and unlink the watcher makes in the inbox, in
    turn, until a pass finishes: after every kill the file is in work/ (resumed) or beside
    its report, and the next pass completes it without storing anything twice."""
    records, kill_at, finished = 4, 0, False
    while not finished:
        kill_at += 1
        assert kill_at < 20, "the watcher never finished"
        base = tmp_path / f"kill{kill_at}"
        inbox = base / "in" / "kokuho"
        config = folder_config(base, inbound_folder(inbox))
        data_dir = base / "data"
        hub = open_hub(data_dir, config)
        try:
            FolderWatcher(hub).poll_once()
            drop(inbox, "NHI.dat", nhi_file(records, bad=(3,)))
            code = run_watcher(killable_watchers, inbox, data_dir, config, kill_at)
            finished = code == 0
            assert finished or code == -9, code
            done = inbox / "done" / "NHI.dat"
            # what a kill leaves: never a moved file without its report, and a report
            # without its file only while the file is still in work/ (to be resumed)
            left = names(inbox / "done")
            for name in left:
                if name.endswith(".report.json"):
                    beside = name.removesuffix(".report.json") in left
                    assert beside or (inbox / "work" / "NHI.dat").exists(), kill_at
                elif not name.endswith(".end"):
                    assert f"{name}.report.json" in left, (kill_at, left)

            FolderWatcher(hub).poll_once()
            FolderWatcher(hub).poll_once()
            assert names(inbox) == [] and names(inbox / "work") == [], kill_at
            assert names(inbox / "done") == ["NHI.dat", "NHI.dat.end", "NHI.dat.report.json"]
            report = report_of(done)
            assert report["stored"] + report["duplicates"] == records - 1, kill_at
            assert [e["record"] for e in report["errors"]] == [3]
            assert stored(hub) == records - 1
            with hub.store.sessions() as session:
                sequences = session.scalars(
                    select(Delivery.sequence)
                    .where(Delivery.destination == "zeimu")
                    .order_by(Delivery.sequence)
                ).all()
            assert list(sequences) == list(range(1, records)), kill_at  # none twice
        finally:
            hub.close()
    # taking the file (link, unlink) and its end file, the report, the end file, the file
    assert kill_at >= 6


def test_a_report_written_before_a_kill_completes_the_move_without_processing_again(
    hub: Hub, inbox: Path
) -> None:
    """The state a kill leaves after the report was written but before the file was moved:
    the next poll moves the file beside its report (the report is not replaced by one that
    counts every record as a duplicate)."""
    drop(inbox, "NHI.dat", nhi_file(3))
    (moved,) = FolderWatcher(hub).poll_once()
    first = report_of(moved)
    # put the file back in work/ as it was before the last move
    moved.rename(inbox / "work" / "NHI.dat")
    (moved,) = FolderWatcher(hub).poll_once()
    assert moved == inbox / "done" / "NHI.dat"
    assert report_of(moved) == first and first["stored"] == 3
    assert names(inbox / "done") == ["NHI.dat", "NHI.dat.end", "NHI.dat.report.json"]


# --- 3. line numbers in the report ----------------------------------------------------------

HOUMU_GOLDEN = ROOT / "mappings" / "golden" / "houmu" / "RegistrationNotice.inbound.full.input.csv"


def test_a_csv_report_gives_the_line_where_each_refused_record_starts(tmp_path: Path) -> None:
    inbox = tmp_path / "in" / "houmu"
    folder = {"path": str(inbox), "service": "RegistrationNotice", "tenant": "412066"}
    config = folder_config(tmp_path, folder, system="houmu", mapping="houmu.yaml")
    hub = open_hub(tmp_path / "data", config)
    try:
        FolderWatcher(hub).poll_once()
        columns, line = HOUMU_GOLDEN.read_text(encoding="utf-8").splitlines()[:2]

        def numbered(number: int, **changes: str) -> str:
            fields = line.split(",")
            fields[1] = f"900{number:02d}"
            for index, value in changes.items():
                fields[int(index[1:])] = value
            return ",".join(fields)

        lines = [
            "H,1,20260401",  # line 1
            columns,  # line 2
            numbered(1, c5='"杵島郡大町町\r\n大字大町"'),  # lines 3-4: a quoted line break
            numbered(2, c0="令和8年13月1日"),  # line 5: no such date
            numbered(3),  # line 6
            numbered(4) + ",余分",  # line 7: one column too many
            "T,4",
        ]
        drop(inbox, "TOUKI.csv", "\r\n".join(lines).encode() + b"\r\n")
        (moved,) = FolderWatcher(hub).poll_once()
        report = report_of(moved)
        assert moved.parent.name == "done", report["refused"]
        # record 1 is refused too (a line break in 所在), which shows where it starts
        assert [(e["record"], e["line"]) for e in report["errors"]] == [(1, 3), (2, 5), (4, 7)]
        assert report["stored"] == 1 and report["records"] == 4
    finally:
        hub.close()


def test_a_fixed_width_report_gives_the_line_of_each_refused_record(hub: Hub, inbox: Path) -> None:
    drop(inbox, "NHI.dat", nhi_file(4, bad=(2, 4)))
    (moved,) = FolderWatcher(hub).poll_once()
    errors = report_of(moved)["errors"]
    assert [(e["record"], e["line"]) for e in errors] == [(2, 3), (4, 5)]  # line 1: header
    assert all(e["findings"] for e in errors)


# --- 4. trigger: stable and empty files -----------------------------------------------------


@pytest.fixture
def stable(tmp_path: Path, inbox: Path) -> Iterator[Hub]:
    config = folder_config(tmp_path, inbound_folder(inbox, trigger="stable", stable_for="PT0.2S"))
    hub = open_hub(tmp_path / "data", config)
    try:
        FolderWatcher(hub).poll_once()
        yield hub
    finally:
        hub.close()


def settled(watcher: FolderWatcher, seconds: float) -> list[Path]:
    """Polls for a little longer than ``seconds`` (with a deadline, not one long sleep)."""
    moved: list[Path] = []
    start = time.monotonic()
    wait_for(lambda: bool(moved.extend(watcher.poll_once())) or time.monotonic() - start > seconds)
    return moved + watcher.poll_once()


def test_a_file_created_empty_is_not_taken_before_the_vendor_writes_it(
    stable: Hub, inbox: Path
) -> None:
    watcher = FolderWatcher(stable)
    target = inbox / "NHI.dat"
    target.write_bytes(b"")  # the vendor creates the file… and pauses
    assert watcher.poll_once() == []
    assert settled(watcher, 0.5) == []  # empty for longer than stable_for: still not taken
    assert target.exists()
    target.write_bytes(nhi_file(2))  # …then writes it
    (moved,) = settled(watcher, 0.5)
    assert moved == inbox / "done" / "NHI.dat" and report_of(moved)["stored"] == 2


def test_a_file_left_empty_long_enough_is_taken_and_refused(stable: Hub, inbox: Path) -> None:
    target = inbox / "NHI.dat"
    target.write_bytes(b"")
    watcher = FolderWatcher(stable, unfinished_age=timedelta(seconds=1.5))  # 10 min in service
    assert watcher.poll_once() == []  # first sighting: never taken at once
    assert settled(watcher, 0.3) == []  # settled, but empty: not yet
    (moved,) = settled(watcher, 2.5)  # unchanged for unfinished_age
    assert moved == inbox / "error" / "NHI.dat"
    assert report_of(moved)["refused"]["code"] == "RK-FIL001"


def test_files_that_vanish_before_they_settle_are_forgotten(stable: Hub, inbox: Path) -> None:
    watcher = FolderWatcher(stable)
    for number in range(3):
        (inbox / f"TMP{number}.dat").write_bytes(b"partial")
    assert watcher.poll_once() == []
    assert watcher.watching() == 3
    for number in range(3):
        (inbox / f"TMP{number}.dat").unlink()  # the vendor gave up or renamed it
    assert watcher.poll_once() == []
    assert watcher.watching() == 0


def test_an_xml_report_gives_the_line_of_each_refused_record(tmp_path: Path) -> None:
    from lxml import etree

    from tests.test_hotfolder_formats import tainou_config, xml_file

    inbox = tmp_path / "in" / "tainou"
    hub = open_hub(tmp_path / "data", tainou_config(tmp_path, inbox))
    try:
        FolderWatcher(hub).poll_once()
        root = etree.fromstring(xml_file(3, bad=(2,)))
        data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        text = data.decode()
        starts = [n for n, line in enumerate(text.splitlines(), 1) if "<tn:滞納処分通知>" in line]
        assert len(starts) == 3
        drop(inbox, "TAINOU.xml", data)
        (moved,) = FolderWatcher(hub).poll_once()
        errors = report_of(moved)["errors"]
        assert [(e["record"], e["line"]) for e in errors] == [(2, starts[1])]
    finally:
        hub.close()
