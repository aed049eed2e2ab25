"""Days typed on the command line are Japan days, whatever the server's time zone.

Town-hall staff live in JST (UTC+9); servers often run in UTC, where 00:00–09:00 JST is still
the previous day. ``renkei messages list --since`` and ``renkei audit verify --from/--to`` must
read a day (令和8年11月27日, 2026-11-27) and a zone-less date-time as the console reads them:
in JST. Each CLI test runs the real ``renkei`` in a subprocess with ``TZ=UTC`` and with
``TZ=Asia/Tokyo`` and expects the same answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bus.cli import options
from bus.settings import Settings
from bus.store.audit import utc
from bus.store.db import open_store
from bus.store.models import AuditRecord, ConfigSnapshot, StoredMessage
from tests.test_store import accepted, sample, stage

RENKEI = str(Path(sys.executable).with_name("renkei"))
ZONES = ("UTC", "Asia/Tokyo")
JST = timezone(timedelta(hours=9))

#: 01:30 on 令和8年11月27日 in Japan: still 11月26日 on a UTC clock.
EARLY_MORNING = datetime(2026, 11, 27, 1, 30, tzinfo=JST)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A SQLite store holding one accepted message, received at ``EARLY_MORNING``."""
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings)
    try:
        stage(store)(accepted(sample()))
        with store.sessions.begin() as session:
            stamp = EARLY_MORNING.astimezone(UTC)  # the store keeps UTC
            session.execute(update(StoredMessage).values(received_at=stamp))
    finally:
        store.close()
    return settings


def renkei(settings: Settings, zone: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TZ": zone,
        "RENKEI_DATA_DIR": str(settings.data_dir),
        "RENKEI_DATABASE_URL": "",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [RENKEI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(
    ("since", "found"),
    [
        ("令和8年11月27日", 1),  # the JST day the message came in
        ("2026-11-28", 0),
        ("2026-11-27T01:00", 1),  # zone-less: JST, as in the console
        ("2026-11-26T17:00+00:00", 0),  # a zone given is kept
    ],
)
def test_since_reads_a_day_and_a_time_in_japan(
    settings: Settings, zone: str, since: str, found: int
) -> None:
    listed = renkei(settings, zone, "messages", "list", "--since", since, "--json")
    assert len(json.loads(listed.stdout)) == found, (zone, since)


@pytest.mark.parametrize("zone", ZONES)
def test_list_shows_the_received_time_in_japan(settings: Settings, zone: str) -> None:
    listed = renkei(settings, zone, "messages", "list")
    assert "received (JST)" in listed.stdout
    assert "2026-11-27 01:30:00" in listed.stdout, listed.stdout


def audit_day(settings: Settings) -> datetime:
    """The JST day (its first instant) on which the trail's last record was stamped."""
    store = open_store(settings)
    try:
        with store.sessions() as session:
            stamped = session.scalars(select(AuditRecord.at)).all()
    finally:
        store.close()
    last = max(utc(at) for at in stamped).astimezone(JST)
    return last.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("zone", ZONES)
def test_audit_to_a_day_takes_in_that_whole_day(settings: Settings, zone: str) -> None:
    """``--to 2026-11-28`` checks the records of 28日 too (the console's 期間 does), and
    ``--from`` the next day none, whatever the machine's zone."""
    day = audit_day(settings)
    records = []
    for option, value in (
        ("--to", f"{day:%Y-%m-%d}"),
        ("--from", f"{day + timedelta(days=1):%Y-%m-%d}"),
    ):
        verified = renkei(settings, zone, "audit", "verify", option, value, "--json")
        records.append(sum(chain["records"] for chain in json.loads(verified.stdout).values()))
    assert records[0] >= 1 and records[1] == 0, (zone, records)


@pytest.fixture(params=ZONES)
def machine_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_moment_is_a_japan_instant_in_any_machine_zone(machine_zone: str) -> None:
    """08:30 JST is 23:30 UTC the day before: the day and the time typed are both JST."""
    first = options.moment("令和8年11月27日", "--since")
    typed = options.moment("2026-11-27T08:30", "--since")
    assert first == datetime(2026, 11, 26, 15, 0, tzinfo=UTC), machine_zone
    assert typed == datetime(2026, 11, 26, 23, 30, tzinfo=UTC), machine_zone
    assert options.moment("2026-11-27T08:30Z", "--since") == datetime(
        2026, 11, 27, 8, 30, tzinfo=UTC
    )


def test_moment_ends_a_day_at_its_last_jst_instant(machine_zone: str) -> None:
    last = options.moment("R08.11.27", "--to", end=True)
    assert last == datetime(2026, 11, 27, 14, 59, 59, 999999, tzinfo=UTC), machine_zone


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01",
        "0001-01-01T00:00",
        "9999-12-31",
        "9999-12-31T23:59-05:00",
        "令和8年2月30日",
        "tomorrow",
    ],
)
def test_moment_refuses_a_day_it_cannot_place(value: str) -> None:
    """A moment whose UTC instant a datetime cannot hold is refused like a misspelt one
    (RK-CON004), not a traceback (ValueError, OverflowError) when the store converts it."""
    with pytest.raises(Exception, match="RK-CON004"):
        options.moment(value, "--since")


def test_config_show_gives_the_apply_time_in_japan(settings: Settings) -> None:
    """Applied at 23:30 UTC is 08:30 the next morning for staff: shown so, and labelled."""
    renkei(settings, "UTC", "config", "show")  # an empty store: the samples are applied
    store = open_store(settings)
    try:
        with store.sessions.begin() as session:
            applied = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
            session.execute(update(ConfigSnapshot).values(applied_at=applied))
    finally:
        store.close()
    for zone in ZONES:
        shown = renkei(settings, zone, "config", "show")
        assert "(applied 2026-11-27 08:30:00 JST by" in shown.stdout, (zone, shown.stdout)


def test_keys_list_labels_an_expiry_with_its_zone(settings: Settings) -> None:
    renkei(settings, "UTC", "keys", "new", "--system", "zeimu")
    renkei(settings, "UTC", "keys", "rotate", "--system", "zeimu", "--overlap-hours", "2")
    listings = [
        renkei(settings, zone, "keys", "list", "--system", "zeimu").stdout for zone in ZONES
    ]
    assert listings[0] == listings[1]
    assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d UTC", listings[0]), listings[0]


def test_an_outbound_batch_header_carries_the_japan_time(machine_zone: str) -> None:
    """A batch closed at 08:30 JST (23:30 UTC the day before) is dated that morning in its
    header record, the date the receiving 基幹 system files it under."""
    from bus.config.models import FieldLimits, FileRecords, OutboundFolder, System
    from bus.folders.outbound import renderer
    from bus.folders.spool import Batch, SpooledRecord
    from bus.mapping.stage import outbound_body
    from tests.support.folders import GOLDEN

    kokuho = System(
        id="kokuho", name="国保", mapping="kokuho.yaml", fields=FieldLimits(my_number=True)
    )
    standard = GOLDEN.with_name("NhiEligibilityNotice.outbound.full.input.xml").read_bytes()
    body = outbound_body(kokuho, "NhiEligibilityNotice", standard)
    folder = OutboundFolder(path="unused", encoding="cp932", records=FileRecords())
    closed = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    batch = Batch("NhiEligibilityNotice", "412066", "b1", closed, [SpooledRecord("m1", body)])
    data, _ = renderer(kokuho, folder)(batch)
    assert data.split(b"\r\n")[0].startswith(b"H2 20260401083000"), machine_zone
