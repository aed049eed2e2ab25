"""A parallel import (`--jobs N`): the same result as one job, resumable, no orphan workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bus.hub import Hub
from bus.imports.generator import generate
from bus.imports.parallel import PARALLEL_FROM_BYTES, default_jobs
from bus.imports.residents import ResidentIndex
from bus.imports.runner import ImportOptions, Summary, run_import
from bus.settings import Settings
from bus.store.models import StoredMessage
from tests.support.imports import cursor_line, import_workers

ROOT = Path(__file__).resolve().parent.parent
TRAPS = ROOT / "samples" / "notices" / "traps-cp932.csv"
RESIDENTS = ROOT / "samples" / "notices" / "residents-412066.csv"
TENANT = "412066"
RENKEI = str(Path(sys.executable).with_name("renkei"))
# The kill tests: four 1,000-line chunks, so with 2 jobs (2 chunks in flight each) a run
# killed after its first commit still has chunks in flight. Ctrl-C lets the chunks in hand
# finish (up to 4 after the first commit): that test needs chunks to come after those.
RECORDS = 4000
INTERRUPTED_RECORDS = 8000


def _import(
    work: Path, notices: Path, jobs: int, settings: Settings | None = None
) -> tuple[Summary, dict[str, bytes], list[str]]:
    """The summary, the CSV outputs and the messageIds in the order the hub stored them."""
    hub = Hub.open(settings or Settings(data_dir=work / "data"))
    index = ResidentIndex(work / "residents.sqlite")
    index.load_extract(RESIDENTS, TENANT)
    try:
        options = ImportOptions(notices, TENANT, out_dir=work / "out", jobs=jobs)
        summary = run_import(hub, options, index)
        with hub.store.sessions() as session:
            query = select(StoredMessage.message_id).order_by(StoredMessage.id)
            stored = list(session.scalars(query))
    finally:
        index.close()
        hub.close()
    outputs = {p.name: p.read_bytes() for p in summary.outputs if p.suffix == ".csv"}
    return summary, outputs, stored


def _with_repeats_and_errors(path: Path) -> Path:
    """A generated file of three chunks and a half whose later chunks repeat earlier notices
    (in-file duplicates in another worker's chunk) and hold record errors."""
    generate(path, 3000)
    lines = path.read_bytes().split(b"\r\n")
    extra = [*lines[1:6], b"a,b,c", lines[2000], b"\xff\xfe,broken"]
    path.write_bytes(b"\r\n".join([*lines[:-1], *extra, b""]))
    return path


Imported = tuple[Path, Summary, dict[str, bytes], list[str]]


@pytest.fixture(scope="module")
def one_job(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """The file with repeats and errors, and what one job on SQLite imports from it: the
    reference each store's two jobs are compared with (imported once, only read after)."""
    tmp = tmp_path_factory.mktemp("one-job")
    notices = _with_repeats_and_errors(tmp / "notices.csv")
    return (notices, *_import(tmp / "one", notices, jobs=1))


def test_two_jobs_import_what_one_job_imports(
    tmp_path: Path, store_settings: Settings, one_job: Imported
) -> None:
    """One job on SQLite against two on each store (PostgreSQL: every worker its own pool)."""
    notices, one, one_outputs, one_stored = one_job
    two, two_outputs, two_stored = _import(tmp_path / "two", notices, 2, store_settings)
    assert (one.new, one.duplicate, one.errors) == (3000, 6, 2)
    assert (two.new, two.duplicate, two.errors) == (one.new, one.duplicate, one.errors)
    assert two_outputs == one_outputs  # the sorted list and the error report, byte for byte
    assert two_stored == one_stored  # stored in file order: chunks take turns
    assert import_workers(os.getpid()) == []  # the pool is gone with the import


def test_the_trap_sample_through_a_worker(tmp_path: Path) -> None:
    """Header row, encodings traps and record errors in a worker's chunk (the file's head)."""
    one, one_outputs, _ = _import(tmp_path / "one", TRAPS, jobs=1)
    two, two_outputs, _ = _import(tmp_path / "two", TRAPS, jobs=2)
    assert (two.new, two.duplicate, two.errors) == (one.new, one.duplicate, one.errors) == (6, 1, 3)
    assert two_outputs == one_outputs


def _start(notices: Path, data: Path, jobs: int) -> subprocess.Popen[bytes]:
    command = [RENKEI, "import", "notices", str(notices), "--tenant", TENANT, "--jobs", str(jobs)]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(notices: Path, data: Path, jobs: int) -> str:
    process = _start(notices, data, jobs)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


def _wait_for(condition: object, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, f"the import ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within 60 s"
        time.sleep(0.02)


def _stored(data: Path) -> int:
    hub = Hub.open(Settings(data_dir=data))
    try:
        with hub.store.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(StoredMessage)) or 0)
    finally:
        hub.close()


def test_a_killed_parallel_import_leaves_no_worker_and_resumes(tmp_path: Path) -> None:
    notices, data = tmp_path / "notices.csv", tmp_path / "data"
    generate(notices, RECORDS)
    lines = notices.read_bytes().split(b"\r\n")[:-1]
    # the last 10 notices were imported before, from another file: 重複 in this one
    earlier = tmp_path / "earlier.csv"
    earlier.write_bytes(b"\r\n".join([lines[0], *lines[-10:], b""]))
    assert _finish(earlier, data, jobs=1) == "新規 10 / 重複 0 / エラー 0"
    # the first 5 again at the end: stored (and committed) by the killed run, 重複 on resume
    notices.write_bytes(b"\r\n".join([*lines, *lines[1:6], b""]))
    process = _start(notices, data, jobs=2)
    committed = lambda: cursor_line(data / "imports", notices) > 1  # noqa: E731
    _wait_for(committed, process, "a chunk was committed")
    workers = import_workers(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = cursor_line(data / "imports", notices)
    assert 1 < killed_at < RECORDS + 2
    deadline = time.monotonic() + 5
    while set(workers) & set(import_workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(workers) & set(import_workers()), "workers outlived the killed import"
    # the killed run may have stored chunks past its cursor: they are counted 新規, once
    assert _finish(notices, data, jobs=2) == f"新規 {RECORDS - 10} / 重複 15 / エラー 0"
    assert _finish(notices, data, jobs=2) == f"新規 0 / 重複 {RECORDS + 5} / エラー 0"
    assert _stored(data) == RECORDS


def test_a_lost_worker_stops_the_import_with_rk_imp007_and_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    notices, data = tmp_path / "notices.csv", tmp_path / "data"
    generate(notices, RECORDS)
    process = _start(notices, data, jobs=2)
    _wait_for(lambda: cursor_line(data / "imports") > 1, process, "a chunk was committed")
    os.kill(import_workers(process.pid)[0], signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3
    assert "RK-IMP007" in err.decode() and "続きから取り込みます" in err.decode()
    assert "Traceback" not in err.decode()
    assert _finish(notices, data, jobs=1) == f"新規 {RECORDS} / 重複 0 / エラー 0"
    assert _stored(data) == RECORDS


# `renkei import notices` pressing Ctrl-C itself, as a terminal does (SIGINT to the whole
# process group), right after its first commit and once its workers are up: at a known point
# with chunks left, not whenever a polling test gets to it (the import may be over by then).
CTRL_C_AFTER_FIRST_COMMIT = """
import os, signal, sys, time
from pathlib import Path
from bus.imports.worklist import Worklist

def workers_up():
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            command = (proc / "cmdline").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"spawn_main" in command:
            ignored = int(status.split("SigIgn:")[1].split()[0], 16)
            found.append(bool(ignored & (1 << (signal.SIGINT - 1))))
    return len(found) == int(sys.argv[-1]) and all(found)

def commit(self, *args):
    original(self, *args)
    if not getattr(commit, "pressed", False):
        commit.pressed = True
        deadline = time.monotonic() + 60
        while not workers_up() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(os.getpgrp(), signal.SIGINT)

original, Worklist.commit = Worklist.commit, commit
from bus.cli import app
sys.argv[0] = "renkei"
sys.exit(app())
"""


def test_ctrl_c_stops_a_parallel_import_cleanly_and_a_rerun_resumes(tmp_path: Path) -> None:
    notices, data = tmp_path / "notices.csv", tmp_path / "data"
    generate(notices, INTERRUPTED_RECORDS)
    command = [sys.executable, "-c", CTRL_C_AFTER_FIRST_COMMIT, "import", "notices"]
    command += [str(notices), "--tenant", TENANT, "--jobs", "2"]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data)}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()
    assert "中断しました" in err.decode() and "Traceback" not in err.decode()
    assert import_workers(process.pid) == []
    # the first chunk, then the three in hand (2 jobs, 2 each) were finished and committed;
    # no chunk was read after Ctrl-C (4,000 lines, the header row's among them)
    assert cursor_line(data / "imports") - 2 == _stored(data) == 4 * 1000 - 1
    assert _finish(notices, data, jobs=2) == f"新規 {INTERRUPTED_RECORDS} / 重複 0 / エラー 0"


@pytest.mark.slow
def test_an_import_stopped_twice_counts_both_tails(tmp_path: Path) -> None:
    """The first run leaves stored records past its cursor; the second is killed before it
    commits anything; the third still counts the first's records 新規."""
    notices, data = tmp_path / "notices.csv", tmp_path / "data"
    generate(notices, 8000)
    first = _start(notices, data, jobs=2)

    def stored_past_the_cursor() -> bool:
        cursor = cursor_line(data / "imports")
        if cursor <= 1:
            return False
        with sqlite3.connect(data / "renkei.db", timeout=10) as db:
            (stored,) = db.execute("select count(*) from messages").fetchone()
        return bool(stored > cursor - 2)

    _wait_for(stored_past_the_cursor, first, "records stored past a committed cursor")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    killed_at = cursor_line(data / "imports")
    assert _stored(data) > killed_at - 2, "the first run left no stored records past its cursor"
    second = _start(notices, data, jobs=2)
    time.sleep(0.3)  # before its workers have started, let alone committed
    second.send_signal(signal.SIGKILL)
    second.communicate()
    assert cursor_line(data / "imports") == killed_at
    assert _finish(notices, data, jobs=2) == "新規 8000 / 重複 0 / エラー 0"


@pytest.mark.parametrize(
    ("size", "expected"),
    [(PARALLEL_FROM_BYTES - 1, 1), (PARALLEL_FROM_BYTES, min(len(os.sched_getaffinity(0)), 4))],
)
def test_default_jobs_by_file_size(size: int, expected: int) -> None:
    assert default_jobs(size) == expected
