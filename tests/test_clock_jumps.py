"""Clock steps and skew (docs/reliability.md, "Clocks"): a VM resumed after a migration (the
wall clock jumps forward), NTP stepping it back, and in scale-out two hosts whose clocks
disagree with the database's. Real processes see a shifted wall clock through libfaketime
(Debian package ``faketime``) while their monotonic clock stays honest, as under a real
step; PostgreSQL keeps the true time.

Leases, due times and Retry-After holds are compared with the database's clock, so a worker
or HTTP process whose own clock is off neither takes over another worker's live lease (a
second delivery) nor writes due times the others only reach minutes later (a stalled
queue). Dispatch heartbeats are compared on the machine's monotonic clock, so ``/readyz``
neither calls a working dispatch process dead after a forward jump nor a dead one alive
after a backward one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from bus.dispatch import heartbeat
from bus.dispatch.claims import claim_jobs
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import Delivery
from bus.store.writers import write_transaction
from tests.support.juki_config import write_juki_config
from tests.support.receivers import Receiver, receiver_factory, wait_for
from tests.test_dispatch import TENANT, add_message

ROOT = Path(__file__).resolve().parent.parent
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

receivers = pytest.fixture(receiver_factory, name="receivers")


def faketime_env(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is ``offset`` (``+3m``, ``-5m``,
    ``+2h``) from the true one while its monotonic clock stays honest. Skips without
    libfaketime (apt package ``faketime``); fails when RENKEI_REQUIRE_SERVICES=1."""
    if not LIBFAKETIME.exists():
        reason = f"libfaketime not installed ({LIBFAKETIME}; apt-get install faketime)"
        if os.environ.get("RENKEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RENKEI_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",  # children (none here) keep the same offset
    }


def skewed_python(offset: str, code: str, *args: str) -> str:
    """Run ``code`` in a Python process whose wall clock is ``offset`` off; its stdout."""
    env = faketime_env(offset)
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_faketime_shifts_the_wall_clock_and_not_the_monotonic_one() -> None:
    """The premise of the other tests: the shifted process's wall clock is off by the offset,
    its monotonic clock is the machine's."""
    code = "import time; print(time.time(), time.monotonic())"
    before = time.time()
    wall, monotonic = map(float, skewed_python("+2h", code).split())
    assert 7190 < wall - before < 7210
    assert abs(monotonic - time.monotonic()) < 10


# --- scale-out: PostgreSQL's clock is the one clock -----------------------------------------


@pytest.fixture
def scale_out(postgres_url: str, tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    open_store(settings).close()  # migrated
    yield settings


def _juki_config(tmp_path: Path, url: str) -> Path:
    return write_juki_config(tmp_path / "config", url, TENANT)


@pytest.mark.postgres
def test_a_worker_whose_clock_is_ahead_leaves_a_live_lease_alone(
    scale_out: Settings, receivers: Callable[[str], Receiver], tmp_path: Path
) -> None:
    """Worker host B's clock is 3 minutes ahead of the database's. A delivery another worker
    leased for 30 s (by the database's clock) and is still sending is not claimed and sent
    again by B; B still delivers what is free. It used to compare the lease with its own
    clock, see it long expired, and send the message a second time."""
    store = open_store(scale_out)
    juki = receivers("juki").start()
    try:
        leased_id, (leased,) = add_message(store.sessions, "S-LEASED", ("juki",))
        with write_transaction(store.sessions) as session:  # another worker, mid-send
            now = session.scalar(text("SELECT clock_timestamp()"))
            jobs = claim_jobs(session, "elsewhere:1:0", now, timedelta(seconds=30), 10)
        assert [job.delivery_id for job in jobs] == [leased]
        free_id, _ = add_message(store.sessions, "S-FREE", ("juki",))
        env = faketime_env("+3m") | {
            "RENKEI_DATABASE_URL": scale_out.effective_database_url,
            "RENKEI_CONFIG_DIR": str(_juki_config(tmp_path, juki.url)),
            "RENKEI_DATA_DIR": str(tmp_path / "data"),
        }
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "renkei"), "worker", "--concurrency", "1"],
            env=env,
            cwd=ROOT,
        )
        try:
            wait_for(lambda: free_id in juki.applied(), timeout=30)
            time.sleep(1.5)  # a poll more: the leased one would have come with it
        finally:
            worker.terminate()
            worker.wait(15)
        assert leased_id not in juki.applied()
        with store.sessions() as session:
            owner = session.scalar(select(Delivery.lease_owner).where(Delivery.id == leased))
        assert owner == "elsewhere:1:0"
    finally:
        store.close()


INGEST = """
import sys
from pathlib import Path
from bus.hub import Hub
from bus.settings import Settings
from tests.test_hub import MOVE_OUT, resident_notice

settings = Settings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2])
hub = Hub.open(settings.model_copy(update={"dispatch_workers": 0}))
try:
    message = hub.ingest(resident_notice(7, MOVE_OUT), adapter="test", source_address="127.0.0.1")
    assert message.ack is not None, message.findings
    print(len(message.ack.destinations))
finally:
    hub.close()
"""


@pytest.mark.postgres
@pytest.mark.parametrize("offset", ["+3m", "-5m"])
def test_a_message_ingested_on_a_host_with_another_clock_is_due_at_once(
    scale_out: Settings, tmp_path: Path, offset: str
) -> None:
    """The HTTP host's clock is 3 minutes ahead of the database's (or 5 minutes behind):
    the deliveries of a message it stores are due now by the database's clock, the one the
    workers claim by, and carry the database's time. They used to carry the host's clock:
    3 minutes ahead, every new message waited 3 minutes for the workers of a host with the
    true time."""
    routed = int(
        skewed_python(offset, INGEST, str(tmp_path / "data"), scale_out.effective_database_url)
    )
    assert routed == 5
    store = open_store(scale_out)
    try:
        with store.sessions() as session:
            rows = session.execute(
                text(
                    "SELECT count(*) FILTER (WHERE next_attempt_at <= now()),"
                    " max(abs(extract(epoch FROM now() - created_at))) FROM deliveries"
                )
            ).one()
        due, off_by = rows
        assert due == routed
        assert off_by < 60  # the database's time, not the host's (180 s or 300 s off)
    finally:
        store.close()


# --- heartbeats: one machine's monotonic clock ----------------------------------------------


READ_AGES = """
import json, sys
from pathlib import Path
from bus.dispatch.heartbeat import process_ages
print(json.dumps(process_ages(Path(sys.argv[1]))))
"""


@pytest.mark.parametrize("offset", ["+2h", "-5m"])
def test_a_dispatch_beat_keeps_its_true_age_when_the_wall_clock_steps(
    tmp_path: Path, offset: str
) -> None:
    """A dispatch process beat 1 s ago; /readyz's process reads the beat after the wall
    clock jumped 2 hours forward (VM resumed after a migration) or stepped 5 minutes back
    (NTP). The beat is 1 s old either way. It used to be 2 hours old — a working dispatch
    process reported dead — or 0 s old for 5 minutes, whatever happened to the process."""
    pool_beat = heartbeat.Heartbeat(object(), 1)
    pool_beat.beat()
    directory = tmp_path / "dispatch"
    heartbeat.write_beat(directory, pool_beat, pid=4242)
    time.sleep(1.0)
    ages = json.loads(skewed_python(offset, READ_AGES, str(directory)))
    assert 1.0 <= ages["4242"] < 10
