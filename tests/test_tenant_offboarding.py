"""A town leaving the shared hub (共同利用からの脱退): its export holds all of its data and
none of another town's, its audit chain verifies from the export alone, and the purge
removes its personal data only when it is disabled, resolved and handed over, leaving the
other towns' data and every audit chain intact (docs/operations.md「団体の脱退」)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from bus.cli import app
from bus.imports.residents import ResidentIndex, resident
from bus.pipeline import Message
from bus.samplegen.messages import MessageSpec, build_message
from bus.samplegen.values import TOWNS
from bus.settings import Settings
from bus.store.admin_audit import admin_records
from bus.store.audit import append_audit, verify_chain
from bus.store.db import Store, open_store
from bus.store.models import (
    AuditRecord,
    Delivery,
    IdempotencyKey,
    StoredMessage,
    SubjectSequence,
)
from bus.store.offboard import OffboardRefused, export_tenant, purge_tenant
from bus.wareki import JST
from tests.support.hub_server import serialize
from tests.test_store import accepted, stage, with_message_id

LEAVING, STAYING = TOWNS[5].code, TOWNS[0].code  # 白石町 leaves, 武雄市 stays


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def ingest(store: Store, town: int, seed: int, state: str = "delivered") -> Message:
    raw = serialize(build_message(MessageSpec("ResidentChangeNotice", seed, TOWNS[town])))
    message = stage(store)(accepted(with_message_id(raw, str(uuid.uuid4())), ("tainou", "shuno")))
    assert message.envelope is not None
    with store.sessions.begin() as session:
        pk = session.scalars(
            select(StoredMessage.id).where(StoredMessage.message_id == message.envelope.message_id)
        ).one()
        session.execute(update(Delivery).where(Delivery.message_pk == pk).values(state=state))
    return message


def two_towns(store: Store) -> tuple[set[str], set[str]]:
    leaving = {ingest(store, 5, seed).envelope.message_id for seed in (1, 2, 3)}  # type: ignore[union-attr]
    staying = {ingest(store, 0, seed).envelope.message_id for seed in (4, 5)}  # type: ignore[union-attr]
    return leaving, staying


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def verify_exported_chain(rows: list[dict[str, object]]) -> bool:
    """The verification docs/operations.md gives the town, with nothing of renkei."""
    prev = "0" * 64
    for seq, row in enumerate(rows, start=1):
        fields = {k: row[k] for k in ("tenant", "seq", "at", "event", "message_id", "actor")}
        fields["detail"] = row["detail"]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest()
        if row["seq"] != seq or row["prev_hash"] != prev or row["hash"] != digest:
            return False
        prev = digest
    return True


def test_the_export_is_the_towns_data_only_and_its_chain_verifies_alone(
    store: Store, tmp_path: Path
) -> None:
    leaving, staying = two_towns(store)
    out = tmp_path / "export"
    manifest = export_tenant(
        store.sessions, LEAVING, out, name="白石町", enabled=False, actor="cli:test"
    )

    messages = lines(out / "messages.jsonl")
    assert {m["messageId"] for m in messages} == leaving
    assert all("<env:tenant>414255</env:tenant>" in str(m["body"]) for m in messages)
    deliveries = lines(out / "deliveries.jsonl")
    assert len(deliveries) == 6 and {d["messageId"] for d in deliveries} == leaving
    chain = lines(out / "audit.jsonl")
    assert {r["tenant"] for r in chain} == {LEAVING}
    assert not any(m in json.dumps(chain) for m in staying)
    assert verify_exported_chain(chain) and manifest["chainVerified"]
    assert manifest["counts"] == {
        "messages": 3,
        "deliveries": 6,
        "auditRecords": len(chain),
        "adminRecords": 0,
    }
    for file, entry in manifest["files"].items():
        assert hashlib.sha256((out / file).read_bytes()).hexdigest() == entry["sha256"]
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert (out.stat().st_mode & 0o077) == 0  # personal data in clear: the operator's only
    with store.sessions() as session:
        (record,) = admin_records(session, action="tenant.export")
        assert record.detail["tenant"] == LEAVING and record.detail["messages"] == 3

    with pytest.raises(OffboardRefused) as refused:  # never into an export already there
        export_tenant(store.sessions, LEAVING, out, name=None, enabled=False, actor=None)
    assert refused.value.finding.code == "RK-TEN017"


def test_the_purge_removes_the_town_and_keeps_the_others_and_every_chain(
    store: Store, tmp_path: Path
) -> None:
    _leaving, staying = two_towns(store)
    out = tmp_path / "export"
    export_tenant(store.sessions, LEAVING, out, name="白石町", enabled=False, actor="cli:test")
    data_dir = tmp_path / "data-files"
    (data_dir / "imports").mkdir(parents=True)
    (data_dir / "imports" / f"{'a' * 32}-{LEAVING}.sqlite").write_bytes(b"x")
    (data_dir / "imports" / f"{'b' * 32}-{STAYING}.sqlite").write_bytes(b"x")
    index = ResidentIndex(data_dir / "imports" / "residents.sqlite")
    index.put(LEAVING, [resident("0000000019", "白石　花子"), resident("0000000027", "白石　一郎")])
    index.put(STAYING, [resident("0000000019", "武雄　太郎")])
    index.close()

    report = purge_tenant(
        store.sessions, LEAVING, out, enabled=False, data_dir=data_dir, actor="cli:test"
    )

    assert (report.messages, report.deliveries, report.sequences) == (3, 6, 6)
    assert (report.import_files, report.resident_rows) == (1, 2)
    assert sorted(p.name for p in (data_dir / "imports").iterdir()) == [
        f"{'b' * 32}-{STAYING}.sqlite",
        "residents.sqlite",
    ]
    index = ResidentIndex(data_dir / "imports" / "residents.sqlite")
    assert (index.count(LEAVING), index.count(STAYING)) == (0, 1)
    index.close()
    with store.sessions() as session:
        stored = set(session.scalars(select(StoredMessage.message_id)))
        assert stored == staying
        for model in (Delivery, SubjectSequence):
            tenants = set(session.scalars(select(model.tenant).distinct()))  # type: ignore[attr-defined]
            assert tenants == {STAYING}, model
        keys = session.scalars(select(IdempotencyKey).where(IdempotencyKey.tenant == LEAVING))
        assert [key.message_pk for key in keys] == [None] * 3  # as after renkei purge
        assert verify_chain(session, LEAVING).ok and verify_chain(session, STAYING).ok
        assert verify_chain(session, "admin").ok
        last = session.scalars(
            select(AuditRecord)
            .where(AuditRecord.tenant == LEAVING)
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        ).one()
        assert (last.event, last.actor, last.detail["offboarded"]) == ("purged", "offboard", True)
        (record,) = admin_records(session, action="tenant.purge")
        assert record.detail["tenant"] == LEAVING and record.detail["messages"] == 3

    # cut short and run again: it finishes, it does not refuse its own `purged` records
    again = purge_tenant(
        store.sessions, LEAVING, out, enabled=False, data_dir=data_dir, actor="cli:test"
    )
    assert again.messages == 0


@pytest.mark.parametrize("store_settings", ["sqlite"], indirect=True)
def test_the_purge_refuses_an_enabled_unresolved_or_stale_handover(
    store: Store, tmp_path: Path
) -> None:
    ingest(store, 5, 1)
    dead = ingest(store, 5, 2, state="dead")
    out = tmp_path / "export"
    export_tenant(store.sessions, LEAVING, out, name="白石町", enabled=True, actor=None)
    data_dir = tmp_path / "files"

    def refused(directory: Path = out, enabled: bool = False) -> str:
        with pytest.raises(OffboardRefused) as error:
            purge_tenant(
                store.sessions, LEAVING, directory, enabled=enabled, data_dir=data_dir, actor=None
            )
        return error.value.finding.code

    assert refused(enabled=True) == "RK-TEN014"
    assert refused() == "RK-TEN015"  # the dead letter is not stranded by the purge
    assert refused(tmp_path / "nothing") == "RK-TEN016"
    assert dead.envelope is not None
    with store.sessions.begin() as session:  # the operator discards it, with its record
        session.execute(update(Delivery).where(Delivery.state == "dead").values(state="discarded"))
        append_audit(session, tenant=LEAVING, event="discarded", detail={}, actor="cli:test")
    assert refused() == "RK-TEN016"  # the chain moved since the export: export again
    again = tmp_path / "export2"
    export_tenant(store.sessions, LEAVING, again, name="白石町", enabled=False, actor=None)
    with open(again / "messages.jsonl", "ab") as handle:  # the export changed after it was made
        handle.write(b"{}\n")
    assert refused(again) == "RK-TEN016"
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(StoredMessage)) == 2

    final = tmp_path / "export3"
    export_tenant(store.sessions, LEAVING, final, name="白石町", enabled=False, actor=None)
    with store.sessions.begin() as session:  # the town's old system still sending: refused
        append_audit(session, tenant=LEAVING, event="rejected", detail={"codes": ["RK-AUT005"]})
    report = purge_tenant(  # a refusal stores nothing: the export still holds everything
        store.sessions, LEAVING, final, enabled=False, data_dir=data_dir, actor=None
    )
    assert report.messages == 2


def test_the_cli_exports_and_purges_a_disabled_town(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "handover"
    assert runner.invoke(app, ["tenants", "list"]).exit_code == 0  # the sample towns loaded
    result = runner.invoke(app, ["tenants", "purge", LEAVING, "--export", str(out)])
    assert result.exit_code == 1 and "RK-TEN016" in result.output
    result = runner.invoke(app, ["tenants", "export", LEAVING, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "still enabled" in result.output
    result = runner.invoke(app, ["tenants", "purge", LEAVING, "--export", str(out)])
    assert result.exit_code == 1 and "RK-TEN014" in result.output
    assert runner.invoke(app, ["tenants", "disable", LEAVING]).exit_code == 0
    # nothing of the town moved since its export (disabling is on the admin chain): it serves
    result = runner.invoke(app, ["tenants", "purge", LEAVING, "--export", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["messages"] == 0
    listed = runner.invoke(app, ["tenants", "list"]).output.splitlines()
    assert [line for line in listed if "purged: " in line] == [
        f"{LEAVING}  白石町  disabled  systems: houmu, juki, kokuho, kotei, shuno, tainou, zeimu"
        f"  purged: {datetime.now(JST).date().isoformat()}"
    ]
    result = runner.invoke(app, ["tenants", "export", "414256", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "RK-TEN001" in result.output
