"""What staff see in a hot folder served by ``renkei serve``: a refused file in ``error/``
beside a report with its code and Japanese message and Japan times, a good one in
``done/``, and the PC's own files beside them left alone."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.support.folders import folder_config, inbound_folder, nhi_file, report_of
from tests.support.hub_server import hub_server
from tests.support.receivers import wait_for

pytestmark = pytest.mark.hotfolder


def test_staff_find_a_refused_file_in_error_with_a_coded_japanese_report_in_japan_time(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "in" / "kokuho"
    folder = inbound_folder(inbox, trigger="stable", stable_for="PT0.3S", poll_interval="PT0.2S")
    config = folder_config(tmp_path, folder)
    with hub_server(tmp_path, config_source=config, serve_options=()):
        wait_for(lambda: (inbox / "done").is_dir())
        (inbox / "Thumbs.db").write_bytes(b"\x00" * 64)  # Explorer's thumbnails
        (inbox / "NHI_BAD.dat").write_bytes(nhi_file(2, declared=3))
        (inbox / "NHI_OK.dat").write_bytes(nhi_file(2))
        wait_for(lambda: Path(f"{inbox}/done/NHI_OK.dat.report.json").exists(), timeout=20)
        wait_for(lambda: Path(f"{inbox}/error/NHI_BAD.dat.report.json").exists(), timeout=20)
        assert (inbox / "Thumbs.db").exists() and not (inbox / "error" / "Thumbs.db").exists()

    assert report_of(inbox / "done" / "NHI_OK.dat")["stored"] == 2
    assert (inbox / "error" / "NHI_BAD.dat").read_bytes() == nhi_file(2, declared=3)
    report = report_of(inbox / "error" / "NHI_BAD.dat")
    refused = report["refused"]
    assert refused["code"] == "RK-FIL003" and "件数（3）" in refused["message_ja"]
    started = datetime.fromisoformat(report["started_at"])
    finished = datetime.fromisoformat(report["finished_at"])
    assert started.utcoffset() == finished.utcoffset() == timedelta(hours=9)
    assert started <= finished
