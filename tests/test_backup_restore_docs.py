"""docs/operations.md "Back up and restore", SQLite: its commands run verbatim (only the paths
replaced) while a real ``renkei serve`` takes messages over HTTP, then the documented restore
into a fresh data directory and a hub started on it: the copies are consistent and private,
nothing acknowledged before the backup began is missing, and the deliveries pending in the
backup are sent."""

from __future__ import annotations

import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bus.catalogue import NS_ENVELOPE
from tests.support.hub_server import ROOT, hub_server, sample, serialize
from tests.support.receivers import Receiver, wait_for

XML = {"Content-Type": "application/xml"}
DOCS = ROOT / "docs" / "operations.md"


def _documented_backup() -> str:
    """The shell block of the SQLite backup, as the operator copies it."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("**SQLite (embedded).**") :]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found is not None
    return found.group(1)


def _acknowledged_under_load(
    url: str, acked: list[tuple[str, float]], stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            document = sample("LevyNotice")
            message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""
            response = client.post(
                "/api/v1/messages/LevyNotice", content=serialize(document), headers=XML
            )
            if response.status_code in (200, 202):
                acked.append((message_id, time.monotonic()))


@pytest.mark.slow
def test_the_documented_backup_under_load_restores_into_a_fresh_data_dir(tmp_path: Path) -> None:
    live, backups, restored = tmp_path / "live", tmp_path / "backup", tmp_path / "restored"
    backups.mkdir()
    script = (
        _documented_backup()
        .replace("/var/lib/renkei", str(live))
        .replace("/backup", str(backups))
        .replace("/opt/renkei/bin/python", sys.executable)
    )
    acked: list[tuple[str, float]] = []
    stop = threading.Event()
    env = {"RENKEI_DATA_DIR": str(live), "RENKEI_DISPATCH_LEASE_SECONDS": "3"}
    with hub_server(
        tmp_path / "first", env=env, serve_options=(), receiver_args=("--down",)
    ) as hub:
        port = hub.receiver.port  # the systems' address, kept in the stored configuration
        senders = [
            threading.Thread(target=_acknowledged_under_load, args=(hub.url, acked, stop))
            for _ in range(3)
        ]
        for sender in senders:
            sender.start()
        try:
            wait_for(lambda: len(acked) >= 30, timeout=15)
            began = time.monotonic()
            # a usual login shell's umask: the documented commands must keep the copy private
            done = subprocess.run(
                ["bash", "-euc", "umask 022\n" + script], capture_output=True, text=True
            )
            time.sleep(0.3)  # acknowledged after the backup: not expected in it
        finally:
            stop.set()
            for sender in senders:
                sender.join()
    assert done.returncode == 0, done.stderr
    before = {message_id for message_id, at in acked if at < began}
    copies = sorted(backups.iterdir())
    assert len(copies) == 2, copies  # the sqlite3 tool's and the Python one's
    for copy in copies:
        mode = stat.S_IMODE(copy.stat().st_mode)
        assert not mode & stat.S_IRWXO, f"{copy.name} is readable by others: {oct(mode)}"
        with sqlite3.connect(copy) as db:
            assert db.execute("pragma integrity_check").fetchone() == ("ok",)
            stored = {row[0] for row in db.execute("select message_id from messages")}
        assert before <= stored, f"{len(before - stored)} acknowledged messages missing"

    # the restore as documented, into a fresh data directory
    restored.mkdir(mode=0o750)
    shutil.copy(copies[0], restored / "renkei.db")
    if (live / "secrets.key").exists():
        shutil.copy2(live / "secrets.key", restored / "secrets.key")
    receiver = Receiver(tmp_path, "restored-systems", port=port).start()
    try:
        env = {"RENKEI_DATA_DIR": str(restored)}
        with hub_server(tmp_path / "second", env=env, serve_options=()) as second:
            assert httpx.get(f"{second.url}/readyz", timeout=5).status_code == 200
            wait_for(lambda: before <= {r["messageId"] for r in receiver.records()}, timeout=20)
    finally:
        receiver.stop()
