"""改ざん検知: the audit trail tampered with directly in the database (SQLite and PostgreSQL),
then `renkei audit verify` — each edit, deletion, insertion, reordering, recomputed chain and
truncation is reported at its first broken link."""

from __future__ import annotations

import getpass
import json
import os
import re
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


def rewrite_chain_from(trail: Trail, seq: int, actor: str, chain: str = TENANT) -> None:
    """Edit record ``seq`` and recompute every later hash and the head: a consistent chain
    that only a signed checkpoint can contradict."""
    with trail.hub.store.sessions.begin() as session:
        records = list(
            session.query(AuditRecord).filter(AuditRecord.tenant == chain).order_by(AuditRecord.seq)
        )
        prev = records[seq - 2].hash if seq > 1 else "0" * 64
        for record in records[seq - 1 :]:
            if record.seq == seq:
                record.actor = actor
            record.prev_hash = prev
            record.hash = prev = hash_of(record, prev)
        session.execute(
            text("UPDATE audit_heads SET hash = :h WHERE tenant = :t"), {"h": prev, "t": chain}
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


# --- identity and tenancy commands on the admin chain ----------------------------------------

SECRET_PASSWORDS = ("first-password-1", "second-password-2")
API_KEY = re.compile(r"rk_[a-z0-9_\-]+_[0-9a-f]{16}\.[A-Za-z0-9_\-]{43}")
SOAP_PASSWORD = re.compile(r"password (\S+)")


@dataclass
class Administered:
    """What the identity commands left: the admin seq of each action and every secret shown."""

    seqs: dict[str, int]
    secrets: list[str]


def admin_records(trail: Trail) -> list[AuditRecord]:
    with trail.hub.store.sessions() as session:
        query = session.query(AuditRecord).filter(AuditRecord.tenant == ADMIN_CHAIN)
        return list(query.order_by(AuditRecord.seq))


def run_cli(trail: Trail, *args: str, password: str | None = None) -> str:
    env = {**trail.env, "RENKEI_CONFIG_DIR": None, "RENKEI_PASSWORD": password}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def administered(trail: Trail) -> Administered:
    """Every identity and tenancy command once through the CLI; each must append exactly the
    expected actions (by ``cli:<login>``) to the admin chain, then a checkpoint signs it."""
    shown: list[str] = []
    seqs: dict[str, int] = {}

    def step(expected: list[str], *args: str, password: str | None = None) -> str:
        before = admin_records(trail)[-1].seq
        output = run_cli(trail, *args, password=password)
        added = [r for r in admin_records(trail) if r.seq > before]
        assert [r.event for r in added] == expected, output
        assert all(r.actor == f"cli:{getpass.getuser()}" for r in added)
        seqs.update({r.event: r.seq for r in added})
        return output

    issued = step(["key.issue"], "keys", "new", "--system", "zeimu", "--valid-days", "30")
    rotated = step(["key.rotate"], "keys", "rotate", "--system", "zeimu", "--overlap-hours", "1")
    keys = API_KEY.findall(issued + rotated)
    assert len(keys) == 2
    key_id = keys[1].split(".")[0][-16:]  # rk_<system>_<16 hex>.<secret>
    step(["key.revoke"], "keys", "revoke", key_id)
    soap = SOAP_PASSWORD.search(step(["key.soap"], "keys", "soap", "--system", "juki"))
    assert soap is not None
    shown += [*keys, soap.group(1)]
    add = ["users", "add", "kashima.op", "--role", "operator", "--tenant", "412074"]
    step(["user.add"], *add, password=SECRET_PASSWORDS[0])
    step(["user.passwd"], "users", "passwd", "kashima.op", password=SECRET_PASSWORDS[1])
    step(["user.disable"], "users", "disable", "kashima.op")
    step(["config.apply", "tenant.add"], "tenants", "add", "412015", "佐賀市")
    step(["config.apply", "tenant.disable"], "tenants", "disable", "412015")
    step(["config.apply", "tenant.enable"], "tenants", "enable", "412015")
    step([], "tenants", "enable", "412015")  # nothing changed: nothing recorded
    run_cli(trail, "keys", "list")  # reading is not an admin action
    written = trail.checkpoint()["checkpoints"]
    assert {"chain": ADMIN_CHAIN, "seq": seqs["tenant.enable"]} in written
    return Administered(seqs, shown + list(SECRET_PASSWORDS))


def test_identity_commands_record_who_and_what_but_no_secret(
    trail: Trail, administered: Administered
) -> None:
    records = {r.event: r for r in admin_records(trail)}
    assert records["key.issue"].detail["system"] == "zeimu"
    assert records["key.issue"].detail["expires_at"] is not None
    rotation = records["key.rotate"].detail
    assert rotation["old_key_ids"] == [records["key.issue"].detail["key_id"]]
    assert records["key.revoke"].detail["key_id"] == rotation["key_id"]
    assert records["key.soap"].detail == {"system": "juki", "username": "juki"}
    assert records["user.add"].detail == {
        "user": "kashima.op",
        "role": "operator",
        "tenants": ["412074"],
    }
    assert records["user.disable"].detail == {"user": "kashima.op"}
    version = records["tenant.add"].detail.pop("version")
    assert records["tenant.add"].detail == {
        "tenant": "412015",
        "name": "佐賀市",
        "file": "tenants/412015.yaml",
    }
    assert records["tenant.disable"].detail["version"] == version + 1
    with trail.hub.store.sessions() as session:
        rows = [
            json.dumps([r.event, r.actor, r.detail], ensure_ascii=False)
            for r in session.query(AuditRecord)
        ]
    for secret in administered.secrets:
        assert not [row for row in rows if secret in row], "a secret reached the audit trail"
    code, report = trail.verify("--anchor", str(trail.anchor))
    assert code == 0 and report[ADMIN_CHAIN]["ok"], report


@pytest.mark.parametrize("action", ["user.add", "key.revoke", "tenant.disable"])
def test_an_edited_identity_record_is_found(
    trail: Trail, administered: Administered, action: str
) -> None:
    seq = administered.seqs[action]
    trail.sql(
        "UPDATE audit_records SET actor = 'cli:mallory' WHERE tenant = :t AND seq = :s",
        t=ADMIN_CHAIN,
        s=seq,
    )
    code, report = trail.verify("--tenant", ADMIN_CHAIN)
    assert code == 1
    assert (report[ADMIN_CHAIN]["first_bad_seq"], report[ADMIN_CHAIN]["code"]) == (
        seq,
        "RK-AUD001",
    )


def test_a_deleted_revocation_record_is_found(trail: Trail, administered: Administered) -> None:
    seq = administered.seqs["key.revoke"]
    trail.sql("DELETE FROM audit_records WHERE tenant = :t AND seq = :s", t=ADMIN_CHAIN, s=seq)
    code, report = trail.verify("--tenant", ADMIN_CHAIN)
    assert code == 1 and report[ADMIN_CHAIN]["first_bad_seq"] == seq


def test_a_recomputed_admin_chain_contradicts_its_checkpoint(
    trail: Trail, administered: Administered
) -> None:
    """Who added the account rewritten, every later hash and the head recomputed: only the
    signed checkpoint of the admin chain still tells."""
    rewrite_chain_from(trail, administered.seqs["user.add"], "cli:mallory", ADMIN_CHAIN)
    code, report = trail.verify("--tenant", ADMIN_CHAIN)
    assert code == 1
    assert (report[ADMIN_CHAIN]["first_bad_seq"], report[ADMIN_CHAIN]["code"]) == (
        administered.seqs["tenant.enable"],
        "RK-AUD002",
    )
