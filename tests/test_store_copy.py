"""``renkei store copy``: an embedded hub's store (SQLite) moved to PostgreSQL with nothing lost.

The source is made by real traffic: 住民異動通知 through the hub's pipeline, a dispatch worker
sending to a recording receiver on 127.0.0.1 that refuses one message (a dead letter, its
subject's next message pending behind it), a purge (so the highest message key ever handed
out is no longer in the table), an API key. After the copy, on PostgreSQL: every table holds
the same rows, the audit chains verify, the dead letter redelivered and the message pending
behind it reach the receiver in order, once each; a resend of a purged message is still a
duplicate; a new message gets a key never handed out before; a second copy is refused."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.cli import app
from bus.dispatch import operations
from bus.dispatch.worker import Worker
from bus.hub import Hub
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.samplegen.values import TOWNS
from bus.security.api_keys import issue_key
from bus.settings import Settings
from bus.store.admin_audit import admin_records
from bus.store.models import Base, Delivery, StoredMessage
from bus.store.retention import purge
from tests.conftest import require_service
from tests.support.file_holder import holding_open
from tests.support.postgres import scratch_database
from tests.support.receivers import Receiver, config_dir_for, free_port

pytestmark = [pytest.mark.services, pytest.mark.postgres]

NOTICE = "ResidentChangeNotice"
SUBSCRIBERS = ("zeimu", "kokuho", "shuno", "kotei", "tainou")  # samples/config/routes.yaml
X, Y, Z = "1000000016", "2000000013", "3000000010"  # 宛名番号 (valid check digits)


@dataclass(frozen=True)
class Moved:
    """The stopped SQLite hub, the PostgreSQL database it was copied into, and its traffic."""

    tmp: Path
    port: int
    settings: Settings  # the SQLite hub's (data_dir, config_dir)
    target: str
    dead: str  # refused by zeimu: a dead letter there
    behind: str  # same subject as ``dead``: pending behind it at zeimu
    resent: bytes  # a delivered, then purged message's raw body
    purged_key: int  # the highest message key handed out (purged)


def _notice(subject: str) -> tuple[str, bytes]:
    document = build_message(MessageSpec(NOTICE, uuid.uuid4().int % 10_000, TOWNS[0]))
    header = document[0]
    message_id = str(uuid.uuid4())
    header.find(f"{{{NS_ENVELOPE}}}messageId").text = message_id  # type: ignore[union-attr]
    header.find(f"{{{NS_ENVELOPE}}}subject").text = subject  # type: ignore[union-attr]
    document.find(f".//{{{NS_STANDARD}}}changeReason").text = "201"  # type: ignore[union-attr]
    return message_id, serialize(document)


def _ingest(hub: Hub, raw: bytes) -> bool:
    """Through the pipeline; whether it was a duplicate."""
    message = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.ack is not None, [f.code for f in message.findings]
    return bool(message.ack.duplicate)


def _send_all(hub: Hub) -> None:
    worker = Worker(
        hub.store.sessions, lambda: hub.config.current().index, None, "copy-test",
        send_concurrency=1,
    )  # fmt: skip
    while worker.run_once():
        pass
    worker.close()


def _renkei(settings: Settings, *args: str, url: str | None = None) -> tuple[int, str, str]:
    env = {"RENKEI_DATA_DIR": str(settings.data_dir), "RENKEI_CONFIG_DIR": str(settings.config_dir)}
    if url is not None:
        env["RENKEI_DATABASE_URL"] = url
    done = CliRunner().invoke(app, list(args), env=env)
    return done.exit_code, done.stdout, done.stderr


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                t.name: connection.scalar(select(func.count()).select_from(t)) or 0
                for t in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def _make_source(tmp: Path, port: int) -> tuple[Settings, str, str, bytes, int]:
    config = config_dir_for(tmp, dict.fromkeys(SUBSCRIBERS, port))
    settings = Settings(data_dir=tmp / "data", config_dir=config, dispatch_workers=0)
    hub = Hub.open(settings)
    try:
        dead, dead_raw = _notice(X)
        _, delivered_raw = _notice(Y)
        for raw in (dead_raw, delivered_raw):
            _ingest(hub, raw)
        receiver = Receiver(tmp, "source-receiver", port).start("--fail-message-ids", dead)
        _send_all(hub)  # dead: refused at every system; delivered: everywhere
        behind, behind_raw = _notice(X)  # pending behind the dead letter of its subject
        _, last_raw = _notice(Z)
        for raw in (behind_raw, last_raw):
            _ingest(hub, raw)
        _send_all(hub)
        receiver.stop()
        with hub.store.sessions() as session:
            purged_key = session.scalar(select(func.max(StoredMessage.id)))
        assert purge(hub.store.sessions, now=datetime.now(UTC) + timedelta(days=400)).messages == 2
        issue_key(hub.store.sessions, "juki", actor="test")
    finally:
        hub.close()
    return settings, dead, behind, delivered_raw, int(purged_key or 0)


def _japan_time(url: str) -> None:
    """The target's sessions in Japan time, as a town's database server may well be: a naive
    value from SQLite (UTC) must not be read as JST there."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            name = connection.scalar(text("SELECT current_database()"))
            connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Tokyo'"))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    require_service("postgresql")
    tmp = tmp_path_factory.mktemp("store-copy")
    port = free_port()
    settings, dead, behind, resent, purged_key = _make_source(tmp, port)
    with scratch_database("renkei_copy") as target:
        _japan_time(target)
        code, out, err = _renkei(settings, "store", "copy", "--to", target)
        assert code == 0, err
        assert "件数一致 counts equal" in out and "messages:" in err  # summary, progress
        yield Moved(tmp, port, settings, target, dead, behind, resent, purged_key)


def test_every_row_is_copied_with_its_keys_and_the_audit_chains_verify(moved: Moved) -> None:
    source = f"sqlite:///{moved.settings.data_dir / 'renkei.db'}"
    counts = _counts(source)
    copied = _counts(moved.target)
    assert copied == {**counts, "audit_records": counts["audit_records"] + 1}  # + store.copy
    for table in ("deliveries", "delivery_attempts", "idempotency_keys", "audit_records"):
        assert counts[table] > 0, table
    assert counts["api_keys"] == 1 and counts["feed_marks"] > 0
    code, out, err = _renkei(moved.settings, "audit", "verify", url=moved.target)
    assert code == 0, out + err


def test_the_copy_is_recorded_on_the_targets_admin_chain(moved: Moved) -> None:
    engine = create_engine(moved.target)
    try:
        with Session(engine) as session:
            [record] = admin_records(session, action="store.copy")
    finally:
        engine.dispose()
    assert record.actor is not None and record.actor.startswith("cli")
    assert record.detail["source"] == str(moved.settings.data_dir / "renkei.db")
    assert record.detail["rows"] == sum(_counts(f"sqlite:///{record.detail['source']}").values())
    assert make_url(record.detail["target"]).password in (None, "***")  # never in clear


def test_the_dead_letter_and_the_message_behind_it_go_out_in_order_once(moved: Moved) -> None:
    receiver = Receiver(moved.tmp, "target-receiver", moved.port).start()
    hub = Hub.open(moved.settings.model_copy(update={"database_url": moved.target}))
    try:
        with hub.store.sessions.begin() as session:
            dead = session.scalars(
                select(Delivery.id)
                .join(StoredMessage)
                .where(StoredMessage.message_id == moved.dead, Delivery.destination == "zeimu")
            ).all()
            assert operations.redeliver(session, dead, reason="移行後の再送") == list(dead)
        _send_all(hub)
        _send_all(hub)  # nothing is left to send twice
    finally:
        hub.close()
        receiver.stop()
    zeimu = [r["messageId"] for r in receiver.records() if r["system"] == "zeimu"]
    assert zeimu == [moved.dead, moved.behind]


def test_a_resend_is_a_duplicate_and_a_new_message_gets_a_new_key(moved: Moved) -> None:
    hub = Hub.open(moved.settings.model_copy(update={"database_url": moved.target}))
    try:
        assert _ingest(hub, moved.resent), "the purged message's resend was stored again"
        message_id, raw = _notice(Z)
        assert not _ingest(hub, raw)
        with hub.store.sessions() as session:
            key = session.scalar(
                select(StoredMessage.id).where(StoredMessage.message_id == message_id)
            )
    finally:
        hub.close()
    assert key is not None and key > moved.purged_key, (key, moved.purged_key)
    code, out, err = _renkei(moved.settings, "audit", "verify", url=moved.target)
    assert code == 0, out + err


def test_a_copy_into_a_store_that_holds_data_is_refused(moved: Moved) -> None:
    before = _counts(moved.target)
    code, _, err = _renkei(moved.settings, "store", "copy", "--to", moved.target)
    assert code == 1
    assert err.startswith("RK-OPS023 ") and "messages " in err and "Traceback" not in err
    assert _counts(moved.target) == before


def test_a_source_another_process_has_open_is_refused(tmp_path: Path, postgres_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    Hub.open(settings).close()
    database = settings.data_dir / "renkei.db"
    with holding_open(database) as holder:
        code, _, err = _renkei(settings, "store", "copy", "--to", postgres_url)
    assert code == 1
    assert err.startswith("RK-OPS024 ") and str(holder) in err
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == []  # the target was not touched
            assert connection.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()


def test_a_copy_that_fails_midway_leaves_the_target_empty_and_can_be_run_again(
    tmp_path: Path, postgres_url: str
) -> None:
    """SQLite does not enforce a column's length, PostgreSQL does: a row too long for the
    target stops the copy at that table; what was written before is rolled back."""
    settings = _one_notice_store(tmp_path)
    database = settings.data_dir / "renkei.db"
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE deliveries SET lease_owner = ? WHERE id = 1", ("w" * 65,))
    code, _, err = _renkei(settings, "store", "copy", "--to", postgres_url)
    assert code == 1
    refusal = err.splitlines()[-1]  # after the progress of the tables copied before
    assert refusal.startswith("RK-OPS026 ") and "deliveries: value too long" in refusal, err
    assert set(_counts(postgres_url).values()) == {0}  # messages were copied, then rolled back
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE deliveries SET lease_owner = NULL WHERE id = 1")
    code, _, err = _renkei(settings, "store", "copy", "--to", postgres_url)
    assert code == 0, err
    assert _counts(postgres_url)["deliveries"] == 5


def _one_notice_store(tmp_path: Path) -> Settings:
    """An embedded store holding one stored notice (its hub closed)."""
    settings = Settings(data_dir=tmp_path / "data", dispatch_workers=0)
    hub = Hub.open(settings)
    try:
        _ingest(hub, _notice(X)[1])
    finally:
        hub.close()
    return settings


def test_a_chain_already_broken_in_the_source_is_copied_as_it_is_and_told(
    tmp_path: Path, postgres_url: str
) -> None:
    """Refusing would leave a town with a tampered store no way to move; hiding it would let
    the copy pass for a sound chain. It is copied as it is and named."""
    settings = _one_notice_store(tmp_path)
    with sqlite3.connect(settings.data_dir / "renkei.db") as connection:
        connection.execute("UPDATE audit_records SET actor = 'forged' WHERE event = 'stored'")
    code, out, err = _renkei(settings, "store", "copy", "--to", postgres_url, "--json")
    assert code == 0, err
    audit = json.loads(out)["audit"]
    assert audit["ok"] is False and len(audit["broken_in_source"]) == 1, audit
    assert "at seq 1: hash does not match" in audit["broken_in_source"][0]
    code, out, err = _renkei(settings, "audit", "verify", url=postgres_url)
    assert code == 1 and "RK-AUD001" in out + err
