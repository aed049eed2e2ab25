"""改ざん検知: the audit trail tampered with directly in the database (SQLite and PostgreSQL),
then `renkei audit verify` — each edit, deletion, insertion, reordering, recomputed chain and
truncation is reported at its first broken link."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from bus.cli import app
from bus.dispatch.operations import pause, resume
from bus.hub import Hub
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN, record_admin_action
from bus.store.audit import hash_of, utc
from bus.store.checkpoints import CheckpointError, anchor_path, write_anchor
from bus.store.models import AuditRecord
from tests.support.hub_server import sample, serialize

pytestmark = pytest.mark.tamper
TENANT = "414247"  # the tenant of samples/messages/ResidentChangeNotice/valid-full.xml


@dataclass
class Trail:
    hub: Hub
    env: dict[str, str | None]
    anchor: Path
    key: Path

    def sql(self, statement: str, **params: Any) -> None:
        with self.hub.store.sessions.begin() as session:
            session.execute(text(statement), params)

    def verify(self, *args: str, signed: bool = True) -> tuple[int, dict[str, Any]]:
        env = self.env if signed else {**self.env, "RENKEI_AUDIT_SIGNING_KEY": None}
        result = CliRunner().invoke(app, ["audit", "verify", "--json", *args], env=env)
        assert result.exit_code in (0, 1), result.output
        return result.exit_code, json.loads(result.stdout)

    def checkpoint(self) -> dict[str, Any]:
        arguments = ["audit", "checkpoint", "--json", "--anchor", str(self.anchor)]
        result = CliRunner().invoke(app, arguments, env=self.env)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))


def ingest(hub: Hub, count: int) -> None:
    for _ in range(count):
        message = hub.ingest(
            serialize(sample("ResidentChangeNotice")), adapter="test", source_address="127.0.0.1"
        )
        assert message.ack is not None, [f.message_en for f in message.findings]


@pytest.fixture
def trail(tmp_path: Path, store_settings: Settings) -> Iterator[Trail]:
    key, anchor = tmp_path / "keys" / "audit.pem", tmp_path / "anchor"
    env: dict[str, str | None] = {
        "RENKEI_DATA_DIR": str(store_settings.data_dir),
        "RENKEI_DATABASE_URL": store_settings.database_url or "",
        "RENKEI_AUDIT_SIGNING_KEY": str(key),
    }
    made = CliRunner().invoke(app, ["audit", "keygen", "--out", str(key)], env=env)
    assert made.exit_code == 0, made.output
    assert os.stat(key).st_mode & 0o077 == 0  # the private key is the owner's only
    hub = Hub.open(store_settings.model_copy(update={"dispatch_workers": 0}))
    try:
        ingest(hub, 3)  # seq 1-3 of the tenant's chain
        state = Trail(hub, env, anchor, key)
        written = state.checkpoint()
        assert {"chain": TENANT, "seq": 3} in written["checkpoints"]
        ingest(hub, 2)  # seq 4-5: after the checkpoint
        yield state
    finally:
        hub.close()


def test_an_intact_trail_verifies_with_checkpoints_and_anchor(trail: Trail) -> None:
    code, report = trail.verify("--anchor", str(trail.anchor))
    assert code == 0, report
    assert report[TENANT]["records"] == 5 and report[TENANT]["checkpoints"] == 1
    assert report[TENANT]["anchored"] == 1 and report[ADMIN_CHAIN]["ok"]
    assert anchor_path(trail.anchor, TENANT, 3).exists()


def test_an_edited_record_is_found(trail: Trail) -> None:
    trail.sql("UPDATE audit_records SET actor = 'mallory' WHERE tenant = :t AND seq = 2", t=TENANT)
    code, report = trail.verify()
    assert code == 1
    assert (report[TENANT]["first_bad_seq"], report[TENANT]["code"]) == (2, "RK-AUD001")


def test_a_deleted_record_is_found(trail: Trail) -> None:
    trail.sql("DELETE FROM audit_records WHERE tenant = :t AND seq = 2", t=TENANT)
    code, report = trail.verify()
    assert code == 1 and report[TENANT]["first_bad_seq"] == 2


def test_an_inserted_record_is_found(trail: Trail) -> None:
    trail.sql("UPDATE audit_records SET seq = seq + 1000 WHERE tenant = :t AND seq >= 3", t=TENANT)
    trail.sql("UPDATE audit_records SET seq = seq - 999 WHERE tenant = :t AND seq > 1000", t=TENANT)
    trail.sql(
        "INSERT INTO audit_records (tenant, seq, at, event, message_id, actor, detail,"
        " prev_hash, hash) SELECT tenant, 3, at, 'accepted', message_id, actor, detail, hash,"
        " hash FROM audit_records WHERE tenant = :t AND seq = 2",
        t=TENANT,
    )
    code, report = trail.verify()
    assert code == 1 and report[TENANT]["first_bad_seq"] == 3


def test_reordered_records_are_found(trail: Trail) -> None:
    trail.sql("UPDATE audit_records SET seq = -1 WHERE tenant = :t AND seq = 2", t=TENANT)
    trail.sql("UPDATE audit_records SET seq = 2 WHERE tenant = :t AND seq = 3", t=TENANT)
    trail.sql("UPDATE audit_records SET seq = 3 WHERE tenant = :t AND seq = -1", t=TENANT)
    code, report = trail.verify()
    assert code == 1 and report[TENANT]["first_bad_seq"] == 2


def rewrite_chain_from(trail: Trail, seq: int, actor: str) -> None:
    """Edit record ``seq`` and recompute every later hash and the head: a consistent chain
    that only a signed checkpoint can contradict."""
    with trail.hub.store.sessions.begin() as session:
        records = list(
            session.query(AuditRecord)
            .filter(AuditRecord.tenant == TENANT)
            .order_by(AuditRecord.seq)
        )
        prev = records[seq - 2].hash if seq > 1 else "0" * 64
        for record in records[seq - 1 :]:
            if record.seq == seq:
                record.actor = actor
            record.prev_hash = prev
            record.hash = prev = hash_of(record, prev)
        session.execute(
            text("UPDATE audit_heads SET hash = :h WHERE tenant = :t"), {"h": prev, "t": TENANT}
        )


def test_a_recomputed_chain_contradicts_the_signed_checkpoint(trail: Trail) -> None:
    rewrite_chain_from(trail, 2, "mallory")
    code, report = trail.verify(signed=False)
    assert code == 1 and report[TENANT]["code"] == "RK-AUD002"  # the hash differs, unsigned
    code, report = trail.verify()
    assert code == 1
    assert (report[TENANT]["first_bad_seq"], report[TENANT]["code"]) == (3, "RK-AUD002")


def test_a_forged_checkpoint_signature_is_found(trail: Trail) -> None:
    rewrite_chain_from(trail, 2, "mallory")
    trail.sql(  # the forger also points the checkpoint at the new hash (cannot re-sign it)
        "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_records"
        " WHERE tenant = :t AND seq = 3) WHERE chain = :t",
        t=TENANT,
    )
    code, report = trail.verify()
    assert code == 1 and report[TENANT]["code"] == "RK-AUD002"
    assert "signature" in report[TENANT]["reason"]


def test_truncation_past_the_checkpoint_is_found_only_with_the_anchor(trail: Trail) -> None:
    trail.sql("DELETE FROM audit_records WHERE tenant = :t AND seq >= 2", t=TENANT)
    trail.sql("DELETE FROM audit_checkpoints WHERE chain = :t", t=TENANT)
    trail.sql(
        "UPDATE audit_heads SET seq = 1, hash = (SELECT hash FROM audit_records"
        " WHERE tenant = :t AND seq = 1) WHERE tenant = :t",
        t=TENANT,
    )
    code, report = trail.verify()  # the database alone looks consistent
    assert code == 0 and report[TENANT]["records"] == 1
    code, report = trail.verify("--anchor", str(trail.anchor))
    assert code == 1
    assert (report[TENANT]["first_bad_seq"], report[TENANT]["code"]) == (2, "RK-AUD003")
    assert "truncated" in report[TENANT]["reason"]


def test_a_deleted_checkpoint_row_is_found_with_the_anchor(trail: Trail) -> None:
    trail.sql("DELETE FROM audit_checkpoints WHERE chain = :t", t=TENANT)
    code, report = trail.verify("--anchor", str(trail.anchor))
    assert code == 1 and report[TENANT]["code"] == "RK-AUD003"


def test_anchor_files_are_never_rewritten(trail: Trail) -> None:
    assert {"chain": TENANT, "seq": 5} in trail.checkpoint()["checkpoints"]
    assert trail.checkpoint()["checkpoints"] == []  # nothing moved: nothing signed again
    path = anchor_path(trail.anchor, TENANT, 3)
    before = path.read_bytes()
    with pytest.raises(CheckpointError):
        write_anchor(trail.anchor, {**json.loads(before), "hash": "0" * 64})
    assert path.read_bytes() == before


def test_from_and_to_limit_the_records_checked(trail: Trail) -> None:
    with trail.hub.store.sessions() as session:
        moments = [
            utc(r.at) for r in session.query(AuditRecord).filter(AuditRecord.tenant == TENANT)
        ]
    first, last = min(moments), max(moments)
    trail.sql("UPDATE audit_records SET actor = 'mallory' WHERE tenant = :t AND seq = 5", t=TENANT)
    code, _ = trail.verify("--tenant", TENANT, "--from", first.isoformat())
    assert code == 1
    if last > first:  # the tampered record is outside [first, first]
        code, report = trail.verify("--tenant", TENANT, "--to", first.isoformat())
        assert code == 0 and report[TENANT]["records"] >= 1


def test_operator_actions_go_to_the_admin_chain(trail: Trail) -> None:
    with trail.hub.store.sessions.begin() as session:
        pause(session, "zeimu", reason="計画停止", actor="cli:op", tenants=[TENANT])
    with trail.hub.store.sessions.begin() as session:
        resume(session, "zeimu", actor="cli:op", tenants=[TENANT])
    with trail.hub.store.sessions.begin() as session:
        record_admin_action(session, "console:admin", "user.add", {"user": "op1"})
        with pytest.raises(ValueError):
            record_admin_action(session, "x", "Drop Table", {})
    with trail.hub.store.sessions() as session:
        events = [
            (r.event, r.actor)
            for r in session.query(AuditRecord)
            .filter(AuditRecord.tenant == ADMIN_CHAIN)
            .order_by(AuditRecord.seq)
        ]
    assert events[0] == ("config.apply", "renkei (initial configuration)")  # loaded at open
    assert events[-3:] == [
        ("destination.paused", "cli:op"),
        ("destination.resumed", "cli:op"),
        ("user.add", "console:admin"),
    ]
    trail.sql(
        "DELETE FROM audit_records WHERE tenant = :t AND event = 'destination.paused'",
        t=ADMIN_CHAIN,
    )
    code, report = trail.verify("--tenant", ADMIN_CHAIN)
    assert code == 1 and report[ADMIN_CHAIN]["first_bad_seq"] == len(events) - 2
