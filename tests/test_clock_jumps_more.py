"""Clock steps and skew, continued (docs/reliability.md, "Clocks"): the rate limits (also the
console's login throttle), ``renkei messages replay``, ``renkei dlq … --all`` and the hot
folders' "unfinished file" wait. Each runs in a real process whose wall clock libfaketime
shifts (its monotonic clock honest), against PostgreSQL on the true time where the bug needs
two clocks (``tests/test_clock_jumps.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from bus.config.models import RateLimit
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.security.operators import Role, add_operator
from bus.security.rate_limit import RateLimiter
from bus.settings import Settings
from bus.store.audit import utc
from bus.store.db import Store, open_store
from bus.store.models import Delivery, RateWindow
from tests.support.folders import folder_config, inbound_folder, nhi_file
from tests.test_clock_jumps import (  # noqa: F401 (scale_out: a fixture)
    ROOT,
    _juki_config,
    faketime_env,
    scale_out,
    skewed_python,
)
from tests.test_dispatch import TENANT, add_message
from tests.test_hub import MOVE_OUT, resident_notice

RENKEI = str(Path(sys.executable).parent / "renkei")

# --- rate limits: one window for every host ---------------------------------------------------

LIMIT = RateLimit(per_minute=3)
ADMIT = """
import json, sys
from bus.config.models import RateLimit
from bus.security.rate_limit import RateLimiter
from bus.settings import Settings
from bus.store.db import open_store

store = open_store(Settings(data_dir=sys.argv[1], database_url=sys.argv[2]))
limiter, limit = RateLimiter(store.sessions), RateLimit(per_minute=3)
print(json.dumps([limiter.waiting(sys.argv[3], limit), limiter.admit(sys.argv[3], limit)]))
store.close()
"""


def _database_minute(store: Store) -> object:
    with store.sessions() as session:
        return session.scalar(text("SELECT date_trunc('minute', clock_timestamp())"))


def _on_another_host(settings: Settings, offset: str, system: str) -> list[int | None]:
    """(waiting, admit) for ``system`` from a process whose clock is ``offset`` off."""
    out = skewed_python(
        offset, ADMIT, str(settings.data_dir), settings.effective_database_url, system
    )
    result = json.loads(out)
    assert isinstance(result, list)
    return result


@pytest.mark.postgres
@pytest.mark.parametrize("offset", ["+3m", "-3m"])
def test_hosts_whose_clocks_differ_count_in_one_window(scale_out: Settings, offset: str) -> None:  # noqa: F811
    """Host A (the true time) uses up a per-minute limit; host B, 3 minutes ahead (or
    behind), is refused in the same minute and told how long to wait. B used to count in
    the window of its own clock's minute and allow a quota of its own."""
    store = open_store(scale_out)
    try:
        for attempt in range(3):  # again only if the database's minute turned meanwhile
            system = f"login:{offset}{attempt}"
            before = _database_minute(store)
            limiter = RateLimiter(store.sessions)
            assert [limiter.admit(system, LIMIT) for _ in range(3)] == [None] * 3
            waiting, refused = _on_another_host(scale_out, offset, system)
            if _database_minute(store) != before:
                continue
            assert waiting is not None and 1 <= waiting <= 60
            assert refused is not None and 1 <= refused <= 60
            break
        else:
            pytest.fail("the database's minute turned during each of three attempts")
    finally:
        store.close()


@pytest.mark.postgres
def test_a_host_stepped_back_is_not_refused_by_a_full_window_of_minutes_ago(
    scale_out: Settings,  # noqa: F811
) -> None:
    """A burst 3 minutes ago filled that minute's window; the host's clock has since been
    stepped back 3 minutes (NTP). Its next request falls in the database's current minute and
    is admitted. It used to fall in the old, full window and be refused for a minute."""
    store = open_store(scale_out)
    try:
        with store.sessions.begin() as session:
            now = session.scalar(text("SELECT extract(epoch FROM clock_timestamp())"))
            start = int(float(now) - 180) // 60 * 60
            session.add(RateWindow(system="juki", unit="m", window_start=start, count=50))
        assert _on_another_host(scale_out, "-3m", "juki") == [None, None]
    finally:
        store.close()


# --- operator commands: the cut-offs and due times are the database's --------------------------


def _cli_env(settings: Settings, tmp_path: Path, offset: str) -> dict[str, str]:
    return faketime_env(offset) | {
        "RENKEI_DATABASE_URL": settings.effective_database_url,
        "RENKEI_CONFIG_DIR": str(_juki_config(tmp_path, "http://127.0.0.1:9/")),
        "RENKEI_DATA_DIR": str(settings.data_dir),
    }


def _renkei(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [RENKEI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    return result.stdout


@pytest.mark.postgres
def test_a_replay_from_a_host_ahead_is_due_at_once(scale_out: Settings, tmp_path: Path) -> None:  # noqa: F811
    """``renkei messages replay`` run on a host 3 minutes ahead of the database: the new
    delivery is due now by the database's clock (the one the workers claim by). It used to be
    due at the host's time, 3 minutes later for every worker with the true time."""
    store = open_store(scale_out)
    try:
        hub = Hub.open(scale_out.model_copy(update={"dispatch_workers": 0}))
        try:
            notice = resident_notice(7, MOVE_OUT)
            message = hub.ingest(notice, adapter="test", source_address="127.0.0.1")
            assert message.ack is not None, message.findings
        finally:
            hub.close()
        env = _cli_env(scale_out, tmp_path, "+3m")
        message_id = message.ack.message_id
        out = _renkei(env, "messages", "replay", message_id, "--to", "zeimu", "--reason", "再送")
        assert "replayed" in out
        with store.sessions() as session:
            due, off_by = session.execute(
                text(
                    "SELECT next_attempt_at <= clock_timestamp(),"
                    " abs(extract(epoch FROM clock_timestamp() - created_at))"
                    " FROM deliveries ORDER BY id DESC LIMIT 1"
                )
            ).one()
        assert due and off_by < 60
    finally:
        store.close()


@pytest.mark.postgres
def test_dlq_all_on_a_host_behind_takes_the_letters_dead_until_now(
    scale_out: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A worker dead-lettered a delivery just now (its time of death is the database's); an
    operator on a host 5 minutes behind runs ``renkei dlq discard --all``: it is discarded.
    The cut-off ("dead by now") used to be the host's clock, 5 minutes in the past, and the
    command left every letter of the last 5 minutes alone."""
    store = open_store(scale_out)
    try:
        _, (delivery,) = add_message(store.sessions, "S-DEAD", ("juki",))
        with store.sessions.begin() as session:
            row = session.get_one(Delivery, delivery)
            row.state, row.attempts = "dead", 3
            row.finished_at = session.scalar(text("SELECT clock_timestamp()"))
        env = _cli_env(scale_out, tmp_path, "-5m")
        out = _renkei(env, "dlq", "discard", "--all", "--reason", "受信側で処理済み")
        assert "discarded: 1" in out
        with store.sessions() as session:
            state = session.scalar(select(Delivery.state).where(Delivery.id == delivery))
        assert state == "discarded"
    finally:
        store.close()


CONSOLE_LOOKS = """
import re, sys
from fastapi.testclient import TestClient
from bus.webapp import create_app

csrf = re.compile(r'name="csrf" value="([^"]+)"')
with TestClient(create_app(), base_url="https://hub.example") as client:
    token = csrf.search(client.get("/console/login").text)[1]
    form = {"csrf": token, "username": "ops", "password": sys.argv[1], "next": ""}
    assert client.post("/console/login", data=form, follow_redirects=False).status_code == 303
    page = client.get("/console/dead-letters/all").text
    offered = re.search(r'name="looked" value="([^"]+)"', page)  # no form: nothing to act on
    print(offered[1] if offered else "nothing")
"""


@pytest.mark.postgres
def test_the_consoles_bulk_action_on_a_host_behind_takes_the_letters_dead_until_now(
    scale_out: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The console's 「すべて再送／破棄」 confirmation, served by a hub process 5 minutes behind
    the database, writes "dead when looked" on the database's clock: a letter that died just
    now is in the work. It wrote the host's time, 5 minutes in the past, and left it out."""
    store = open_store(scale_out)
    try:
        _, (delivery,) = add_message(store.sessions, "S-LOOK", ("juki",))
        with store.sessions.begin() as session:
            row = session.get_one(Delivery, delivery)
            row.state, row.attempts = "dead", 3
            row.finished_at = session.scalar(text("SELECT clock_timestamp()"))
        add_operator(store.sessions, "ops", "correct horse 42", Role.ADMIN, frozenset({TENANT}))
        env = _cli_env(scale_out, tmp_path, "-5m") | {"RENKEI_DISPATCH_WORKERS": "0"}
        result = subprocess.run(
            [sys.executable, "-c", CONSOLE_LOOKS, "correct horse 42"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() != "nothing", "the letter dead just now was left out"
        looked = datetime.fromisoformat(result.stdout.strip())
        with store.sessions() as session:
            finished = session.scalar(select(Delivery.finished_at).where(Delivery.id == delivery))
        assert finished is not None and looked >= utc(finished), (looked, finished)
    finally:
        store.close()


# --- hot folders: "unchanged for so long" on the monotonic clock ------------------------------

WATCH = """
import json, sys, threading, time
from pathlib import Path
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.settings import Settings

hub = Hub.open(Settings(data_dir=Path(sys.argv[1]), config_dir=Path(sys.argv[2])))
try:
    watcher, moved, start = FolderWatcher(hub), [], time.monotonic()
    while time.monotonic() - start < 1.5:
        moved += [str(path) for path in watcher.poll_once()]
        threading.Event().wait(0.05)  # time.sleep: EINVAL under libfaketime
    print(json.dumps(moved))
finally:
    hub.close()
"""


@pytest.mark.hotfolder
def test_a_file_still_being_written_is_not_taken_after_a_forward_jump(tmp_path: Path) -> None:
    """The watcher's host clock jumped 15 minutes forward (a VM resumed after a migration)
    while a vendor is writing NHI002.dat and has not written its trailer yet: the file is
    left to be finished; a complete file beside it is taken. The half file used to look
    "last modified 15 minutes ago", past the 10-minute wait for unfinished files, and was
    refused whole (RK-FIL002) while the vendor was still writing it."""
    inbox = tmp_path / "in" / "kokuho"
    config = folder_config(tmp_path, inbound_folder(inbox, trigger="stable", stable_for="PT0.2S"))
    data_dir = tmp_path / "data"
    hub = Hub.open(Settings(data_dir=data_dir, config_dir=config))
    try:
        FolderWatcher(hub).poll_once()  # creates the folders
    finally:
        hub.close()
    (inbox / "NHI001.dat").write_bytes(nhi_file(2))
    writing = inbox / "NHI002.dat"
    with writing.open("wb") as handle:
        handle.write(nhi_file(3)[:500])
        handle.flush()
        moved = json.loads(skewed_python("+15m", WATCH, str(data_dir), str(config)))
    assert moved == [str(inbox / "done" / "NHI001.dat")]
    assert writing.exists() and list((inbox / "error").iterdir()) == []


# --- the queue's age in /metrics -----------------------------------------------------------------

OLDEST = """
import sys
from bus.observability.store_gauges import StoreCollector
from bus.settings import Settings
from bus.store.db import open_store

store = open_store(Settings(data_dir=sys.argv[1], database_url=sys.argv[2]))
for family in StoreCollector(store.sessions).collect():
    if family.name == "renkei_queue_oldest_seconds":
        print(max(sample.value for sample in family.samples))
store.close()
"""


@pytest.mark.postgres
def test_the_queue_age_scraped_on_a_host_ahead_is_the_databases(scale_out: Settings) -> None:  # noqa: F811
    """A delivery pending for a moment, scraped on a host 2 hours ahead of the database:
    ``renkei_queue_oldest_seconds`` says a moment, not two hours (an alert on the queue's age
    would have fired on every such host)."""
    store = open_store(scale_out)
    try:
        add_message(store.sessions, "S-AGE", ("juki",))
    finally:
        store.close()
    out = skewed_python("+2h", OLDEST, str(scale_out.data_dir), scale_out.effective_database_url)
    assert float(out) < 60, out
