"""``/readyz`` says whether the dispatch workers are alive: a hub that accepts but cannot
deliver is not ready (RK-OPS004). Real dispatchers, stopped for real: the in-process
``WorkerPool`` stopped, and ``renkei serve --dispatch-processes 1``'s process frozen
(SIGSTOP) and thawed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from bus.dispatch.heartbeat import STALE_ENV, BeatFile, Heartbeat, beat_dir, process_ages
from bus.hub import Hub
from bus.observability.readiness import readiness
from bus.settings import Settings
from tests.support.hub_server import hub_server
from tests.support.receivers import wait_for


def _dispatch(checks: list) -> object:  # type: ignore[type-arg]
    found = [check for check in checks if check.name == "dispatch"]
    assert len(found) == 1, [check.name for check in checks]
    return found[0]


def test_a_stopped_in_process_pool_makes_the_hub_unready(tmp_path: Path) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path / "data", dispatch_workers=1))
    try:
        pool = hub.workers(1)
        before = _dispatch(readiness(hub))
        assert before.finding is not None and before.finding.code == "RK-OPS004"  # not started
        pool.start()
        wait_for(lambda: _dispatch(readiness(hub)).ok, timeout=10)
        pool.stop()
        after = _dispatch(readiness(hub))
        assert not after.ok and after.finding is not None
        assert after.finding.code == "RK-OPS004"
        assert "配信" in after.finding.message_ja and "dispatch" in after.finding.message_en
    finally:
        hub.close()


def test_no_dispatch_check_where_the_workers_run_elsewhere(tmp_path: Path) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path / "data", dispatch_workers=0))
    try:
        assert [check.name for check in readiness(hub)] == ["database", "broker", "configuration"]
    finally:
        hub.close()


def _ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=10)


def test_a_frozen_dispatch_process_makes_serve_unready_until_it_runs_again(
    tmp_path: Path,
) -> None:
    env = {STALE_ENV: "3"}
    with hub_server(tmp_path, env=env, serve_options=("--dispatch-processes", "1")) as hub:
        wait_for(lambda: _ready(hub.url).status_code == 200, timeout=60)
        assert _ready(hub.url).json()["checks"]["dispatch"] == {"ok": True}
        beats = beat_dir(tmp_path / "hub-data")
        wait_for(lambda: any(beats.glob("*.beat")), timeout=10)
        (pid,) = [int(path.stem) for path in beats.glob("*.beat")]
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: _ready(hub.url).status_code == 503, timeout=20)
            answer = _ready(hub.url).json()
            assert answer["status"] == "unavailable"
            assert answer["checks"]["dispatch"]["finding"]["code"] == "RK-OPS004"
            assert answer["checks"]["database"] == {"ok": True}
        finally:
            os.kill(pid, signal.SIGCONT)
        started = time.monotonic()
        wait_for(lambda: _ready(hub.url).status_code == 200, timeout=20)
        assert time.monotonic() - started < 20


def test_a_beat_that_cannot_be_written_is_told_once_each_way(tmp_path: Path) -> None:
    """A dispatch process writes its beat once a second; on a full disk it logged a warning a
    second for as long as the disk stayed full. A real failing write here: the beat folder's
    name is taken by a file."""
    beats = tmp_path / "dispatch"
    beats.write_text("not a folder")
    pulse = Heartbeat(key=None, workers=1)
    pulse.beat()
    beat_file = BeatFile(beats)
    first = beat_file.write(pulse)
    assert first is not None and first[0] == "failed"
    assert [beat_file.write(pulse) for _ in range(3)] == [None, None, None]
    beats.unlink()
    assert beat_file.write(pulse) == ("written", first[1])
    assert beat_file.write(pulse) is None
    assert os.getpid() in process_ages(beats)
