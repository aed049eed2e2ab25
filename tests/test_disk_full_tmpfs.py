"""The data directory's disk really full: ``RENKEI_DATA_DIR`` on a tiny tmpfs of the test's own,
a real ``renkei serve`` with real senders (REST and SOAP over HTTP), a real
``renkei import notices`` of a generated file. The disk is filled with a ballast file and
freed by removing it (or by growing the tmpfs, as a bigger volume would).

Mounting a tmpfs needs root: the tests are skipped otherwise (CI runs them as root)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.catalogue import NS_ENVELOPE
from bus.imports.generator import generate
from tests.support.hub_server import hub_server, sample, serialize, soap_envelope
from tests.support.receivers import SAMPLE_CONFIG_DIR, free_port, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs (the full disk) needs root"
)

RENKEI = str(Path(sys.executable).parent / "renkei")
SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
XML = {"Content-Type": "application/xml"}
EXIT_STOPPED = 3  # bus/cli/imports.py


class TinyDisk:
    """A tmpfs of ``size`` mounted on ``root``; :meth:`fill` leaves ``room`` bytes free."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def free(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def fill(self, room: int = 0) -> None:
        with self.ballast.open("ab", buffering=0) as handle:
            while (left := self.free() - room) > 0:
                try:
                    handle.write(b"\0" * min(left, 1 << 20))
                except OSError:  # ENOSPC: as full as it gets
                    return

    def clear(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def grow(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.root)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], check=True)
    try:
        yield TinyDisk(root)
    finally:
        subprocess.run(["umount", str(root)], check=False)
        if os.path.ismount(root):  # a process of the test still holds a file
            subprocess.run(["umount", "-l", str(root)], check=False)


def _renkei(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(data_dir),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
    }
    return subprocess.run([RENKEI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_full_data_disk_is_told_as_no_room_by_serve_and_commands(tiny_disk: TinyDisk) -> None:
    """The hub restarted (or a command run) while the disk is still full: the store cannot
    even be opened (SQLite cannot size its ``-shm`` file: "disk I/O error"). That is one coded
    line saying the store has no room (RK-OPS015), not "the database cannot be reached"
    (RK-OPS001: an operator then looks for a database server that SQLite does not have)."""
    data = tiny_disk.root / "data"
    assert _renkei(data, "tenants", "list").returncode == 0  # the store exists, closed
    tiny_disk.fill()
    port = str(free_port())
    for args in (("serve", "--no-samples", "--port", port), ("purge",)):
        done = _renkei(data, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "RK-OPS015" in done.stderr, (args, done.stderr)
        assert "RK-OPS001" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    tiny_disk.clear()
    assert _renkei(data, "purge").returncode == 0


def _post(client: httpx.Client, soap: bool) -> tuple[str, httpx.Response]:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""
    if soap:
        return message_id, client.post(
            "/soap/LevyNotice", content=soap_envelope(document), headers=SOAP
        )
    return message_id, client.post(
        "/api/v1/messages/LevyNotice", content=serialize(document), headers=XML
    )


def _events(log: Path) -> list[dict[str, object]]:
    lines = log.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize(
    "serve_options",
    [(), ("--http-workers", "2")],
    ids=["one process", "two HTTP processes"],
)
def test_senders_meet_a_full_disk_with_coded_503s_and_the_hub_recovers_by_itself(
    tiny_disk: TinyDisk, tmp_path: Path, serve_options: tuple[str, ...]
) -> None:
    """Also with several HTTP processes, whose metrics are shared through memory-mapped files
    in ``<data_dir>/metrics``, on the full disk too (a write to a page of them not yet on disk
    would end the process with SIGBUS: docs/operations.md, When the disk fills)."""
    data = tiny_disk.root / "data"
    log = tmp_path / "hub.log"
    acked: list[str] = []
    refused: list[str] = []
    # a round whose outcomes could not be recorded keeps its leases (sent again once they
    # expire, with the subjects' later deliveries behind them): a short lease for the test
    env = {"RENKEI_DATA_DIR": str(data), "RENKEI_DISPATCH_LEASE_SECONDS": "3"}
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, env=env, serve_options=serve_options, stderr=stderr) as hub,
        httpx.Client(base_url=hub.url, timeout=30) as client,
    ):
        tiny_disk.fill(room=300_000)
        for attempt in range(300):
            message_id, response = _post(client, soap=attempt % 2 == 0)
            if response.status_code in (200, 202):
                acked.append(message_id)
                continue
            refused.append(message_id)
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
            assert "RK-STO007" in response.text, response.text
            if len(refused) >= 10:
                break
        assert len(refused) == 10, "the disk never filled"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["finding"]["code"] == "RK-OPS007"
        time.sleep(1.5)  # the dispatch workers meet the full disk too
        tiny_disk.clear()
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)
        for attempt in range(2):
            message_id, response = _post(client, soap=attempt == 0)
            assert response.status_code in (200, 202), response.text
            acked.append(message_id)
        wait_for(lambda: set(acked) <= {r["messageId"] for r in hub.receiver.records()}, 15)
    with sqlite3.connect(data / "renkei.db") as db:
        stored = {row[0] for row in db.execute("select message_id from messages")}
    assert set(acked) <= stored
    assert not set(refused) & stored  # nothing of a refused message was kept
    told = [str(e["event"]) for e in _events(log)]
    assert sum(t.startswith("RK-OPS007 the message store cannot be written") for t in told) == 1
    assert sum(t.startswith("RK-OPS007 cleared") for t in told) == 1
    assert not any("Traceback" in json.dumps(e) or e.get("exception") for e in _events(log))
    workers = [e for e in _events(log) if e["event"] == "worker.database_unavailable"]
    assert all(e["code"] == "RK-OPS015" for e in workers), workers  # not "cannot be reached"


@pytest.mark.slow
def test_an_import_stopped_by_a_full_disk_is_coded_and_resumes_with_the_right_counts(
    tiny_disk: TinyDisk, tmp_path: Path
) -> None:
    """The work file and the store share the data directory: whichever meets the full disk
    first, the import stops with RK-IMP015 (exit 3) at once, and the same command resumes
    once there is room: every record stored once, counted 新規 once."""
    notices = tmp_path / "notices.csv"
    records = 4000
    generate(notices, records, seed=11, encoding="utf-8")
    data = tiny_disk.root / "data"
    command = ("import", "notices", str(notices), "--tenant", "412066", "--jobs", "1")
    started = time.monotonic()
    stopped = _renkei(data, *command, "--out", str(tmp_path / "out"))
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr[-3000:]
    assert "RK-IMP015" in stopped.stderr and "Traceback" not in stopped.stderr, stopped.stderr
    assert time.monotonic() - started < 15  # not held by audit records it cannot write
    tiny_disk.grow("200m")
    resumed = _renkei(data, *command, "--out", str(tmp_path / "out"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"新規 {records} / 重複 0 / エラー 0" in resumed.stdout
    with sqlite3.connect(data / "renkei.db") as db:
        count, distinct = db.execute(
            "select count(*), count(distinct message_id) from messages"
        ).fetchone()
    assert count == distinct == records
