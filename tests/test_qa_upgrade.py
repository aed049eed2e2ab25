"""The upgrade from a release whose store is at the previous head (0007): ``renkei serve`` on
that store migrates it with one ``store.migrated`` log line (no Alembic INFO lines), and what
the older release left — a dead letter, a paused destination — is still there and works: the
dead letter is redelivered and delivered, the destination stays paused. The store is built
with the current migrations up to the previous head and filled through SQL, as the older
release left it (tests/test_soap_password_overlap.py builds "the previous head" the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, select

from bus.settings import Settings
from bus.store.db import SCHEMA_HEAD, _alembic_config, create_store_engine, schema_version
from bus.store.models import Delivery, DestinationState, StoredMessage
from tests.support.hub_server import RENKEI, hub_server, sample, serialize
from tests.support.receivers import wait_for
from tests.test_soap_password_overlap import PREVIOUS_HEAD


def _older_store(data_dir: Path) -> tuple[str, int]:
    """A store at the previous head holding one 住民異動通知 dead-lettered at 収納 (shuno)
    and 固定資産税 (kotei) paused: the message id and the dead delivery's id."""
    document = sample("ResidentChangeNotice", "valid-minimal.xml")
    body = serialize(document)
    message_id = document.findtext(".//{urn:renkei:platform:envelope:1}messageId")
    assert message_id is not None
    engine = create_store_engine(Settings(data_dir=data_dir))
    at = datetime.now(UTC) - timedelta(days=3)
    try:
        command.upgrade(_alembic_config(engine), PREVIOUS_HEAD)
        with engine.begin() as connection:
            message_pk = connection.execute(
                insert(StoredMessage.__table__).values(
                    message_id=message_id,
                    tenant="414247",
                    system="juki",
                    service="ResidentChangeNotice",
                    kind="notification",
                    body=body,
                    body_digest=hashlib.sha256(body).hexdigest(),
                    received_at=at,
                    expires_at=at + timedelta(days=365),
                )
            ).inserted_primary_key[0]
            delivery = connection.execute(
                insert(Delivery.__table__).values(
                    message_pk=message_pk,
                    destination="shuno",
                    tenant="414247",
                    subject_key="",
                    sequence=1,
                    state="dead",
                    attempts=12,
                    next_attempt_at=at,
                    first_attempt_at=at,
                    last_error="connection: ConnectionRefusedError",
                    created_at=at,
                    finished_at=at + timedelta(hours=1),
                )
            ).inserted_primary_key[0]
            connection.execute(
                insert(DestinationState.__table__).values(
                    system="kotei",
                    paused=True,
                    reason="システム更新",
                    changed_at=at,
                    changed_by="cli:ops1",
                )
            )
    finally:
        engine.dispose()
    return message_id, delivery


def test_serve_migrates_an_older_store_with_one_line_and_keeps_its_work(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub-data"
    message_id, delivery = _older_store(data_dir)
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr, hub_server(tmp_path, serve_options=(), stderr=stderr) as hub:
        env = {
            **os.environ,
            "RENKEI_DATA_DIR": str(data_dir),
            "RENKEI_CONFIG_DIR": str(hub.config_dir),
        }
        env.pop("RENKEI_DATABASE_URL", None)
        redeliver = [RENKEI, "dlq", "redeliver", str(delivery), "--reason", "更新後の再送"]
        done = subprocess.run(redeliver, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: message_id in hub.receiver.applied(), timeout=60)
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
    noise = [line for line in lines if str(line.get("logger", "")).startswith("alembic")]
    assert noise == []
    migrated = [line for line in lines if line["event"] == "store.migrated"]
    assert len(migrated) == 1
    assert migrated[0]["from_version"] == PREVIOUS_HEAD
    assert migrated[0]["to_version"] == SCHEMA_HEAD
    engine = create_store_engine(Settings(data_dir=data_dir))
    try:
        assert schema_version(engine) == SCHEMA_HEAD
        with engine.connect() as connection:
            state = connection.execute(
                select(DestinationState.paused, DestinationState.reason).where(
                    DestinationState.system == "kotei"
                )
            ).one()
            delivered = connection.scalar(select(Delivery.state).where(Delivery.id == delivery))
    finally:
        engine.dispose()
    assert tuple(state) == (True, "システム更新")
    assert delivered == "delivered"


@pytest.mark.parametrize("args", [("dlq", "list"), ("messages", "list")])
def test_a_cli_command_before_serve_migrates_the_older_store(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "hub-data"
    message_id, _ = _older_store(data_dir)
    env = {**os.environ, "RENKEI_DATA_DIR": str(data_dir), "COLUMNS": "250"}
    env.pop("RENKEI_DATABASE_URL", None)
    done = subprocess.run([RENKEI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert message_id in done.stdout
    engine = create_store_engine(Settings(data_dir=data_dir))
    try:
        assert schema_version(engine) == SCHEMA_HEAD
    finally:
        engine.dispose()
