"""The audit trail: per-tenant hash chains, tamper detection, the Audit stage, no personal
data. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text

from bus.pipeline import Message
from bus.settings import Settings
from bus.store.audit import GENESIS, UNATTRIBUTED_TENANT, AuditStage, append_audit, verify_chain
from bus.store.db import Store, open_store
from bus.store.models import AuditHead, AuditRecord
from bus.validation.validator import Validator
from tests.test_store import accepted, count, personal_values, sample, stage

TENANT = "412015"


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def append_many(store: Store, n: int, tenant: str = TENANT) -> None:
    for i in range(n):
        with store.sessions.begin() as session:
            append_audit(
                session,
                tenant=tenant,
                event="delivered",
                message_id=f"m-{i}",
                detail={"attempt": i, "destination": "tainou"},
                actor="worker",
            )


def records(store: Store, tenant: str = TENANT) -> list[AuditRecord]:
    with store.sessions() as session:
        return list(
            session.scalars(
                select(AuditRecord).where(AuditRecord.tenant == tenant).order_by(AuditRecord.seq)
            )
        )


def verify(store: Store, tenant: str = TENANT) -> tuple[bool, int, int | None]:
    with store.sessions() as session:
        report = verify_chain(session, tenant)
    return report.ok, report.records, report.first_bad_seq


def test_chain_links_from_genesis(store: Store) -> None:
    append_many(store, 3)
    append_many(store, 2, tenant="412023")
    chain = records(store)
    assert [r.seq for r in chain] == [1, 2, 3]
    assert chain[0].prev_hash == GENESIS
    assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]
    assert len({r.hash for r in chain}) == 3
    assert verify(store) == (True, 3, None)
    assert verify(store, "412023") == (True, 2, None)
    assert verify(store, "999999") == (True, 0, None)
    with store.sessions() as session:
        head = session.get(AuditHead, TENANT)
        assert head is not None and (head.seq, head.hash) == (3, chain[-1].hash)


def test_hash_covers_the_record_canonically(store: Store) -> None:
    append_many(store, 1)
    (record,) = records(store)
    fields = {
        "tenant": TENANT,
        "seq": 1,
        "at": record.at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
        "event": "delivered",
        "message_id": "m-0",
        "actor": "worker",
        "detail": {"attempt": 0, "destination": "tainou"},
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record.hash == hashlib.sha256((GENESIS + canonical).encode()).hexdigest()


def test_edited_detail_is_detected(store: Store) -> None:
    append_many(store, 4)
    with store.sessions.begin() as session:
        record = session.scalars(select(AuditRecord).where(AuditRecord.seq == 3)).one()
        record.detail = {"attempt": 99, "destination": "tainou"}
    assert verify(store)[0::2] == (False, 3)


def test_deleted_record_is_detected(store: Store) -> None:
    append_many(store, 4)
    with store.sessions.begin() as session:
        session.execute(text("DELETE FROM audit_records WHERE seq = 2"))
    assert verify(store)[0::2] == (False, 2)


def test_deleted_tail_is_detected(store: Store) -> None:
    append_many(store, 4)
    with store.sessions.begin() as session:
        session.execute(text("DELETE FROM audit_records WHERE seq = 4"))
    assert verify(store)[0::2] == (False, 4)


def test_record_appended_past_the_head_is_detected(store: Store) -> None:
    """A record added at the end without moving the head (a forged tail) is a break."""
    from bus.store.audit import record_hash

    append_many(store, 2)
    with store.sessions.begin() as session:
        last = session.scalars(select(AuditRecord).where(AuditRecord.seq == 2)).one()
        fields = {
            "tenant": TENANT,
            "seq": 3,
            "at": last.at,
            "event": "delivered",
            "message_id": "forged",
            "actor": "worker",
            "detail": {},
        }
        session.add(
            AuditRecord(**fields, prev_hash=last.hash, hash=record_hash(last.hash, **fields))
        )
    assert verify(store) == (False, 3, 3)


@pytest.mark.postgres
def test_appends_committed_while_verifying_are_not_a_break(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`renkei audit verify` on a live hub: records (and the head) committed after the
    records were read but before the head was are verified too, not reported as a deleted
    tail. (PostgreSQL, where each statement sees the latest commits; SQLite serialises the
    verifier and the writers.)"""
    store_settings = Settings(database_url=postgres_url)
    from bus.store import audit

    store, writer = open_store(store_settings), open_store(store_settings)
    try:
        append_many(store, 3)
        walk = audit._walk
        appended: list[bool] = []

        def walk_then_append(records: object, start: object) -> object:
            result = walk(records, start)  # type: ignore[arg-type]
            if not appended:
                appended.append(True)
                append_many(writer, 2)  # another hub process commits meanwhile
            return result

        monkeypatch.setattr(audit, "_walk", walk_then_append)
        assert verify(store) == (True, 5, None)
    finally:
        store.close()
        writer.close()


def test_reordered_records_are_detected(store: Store) -> None:
    append_many(store, 4)
    with store.sessions.begin() as session:  # swap 2 and 3 (through a free number)
        session.execute(text("UPDATE audit_records SET seq = 99 WHERE seq = 2"))
        session.execute(text("UPDATE audit_records SET seq = 2 WHERE seq = 3"))
        session.execute(text("UPDATE audit_records SET seq = 3 WHERE seq = 99"))
    assert verify(store)[0::2] == (False, 2)


def test_rehashed_forgery_breaks_the_next_link(store: Store) -> None:
    """Editing a record and recomputing its own hash still breaks the chain at the next one."""
    from bus.store.audit import record_hash

    append_many(store, 3)
    with store.sessions.begin() as session:
        record = session.scalars(select(AuditRecord).where(AuditRecord.seq == 2)).one()
        record.detail = {"forged": True}
        record.hash = record_hash(
            record.prev_hash,
            tenant=record.tenant,
            seq=record.seq,
            at=record.at,
            event=record.event,
            message_id=record.message_id,
            actor=record.actor,
            detail=record.detail,
        )
    assert verify(store)[0::2] == (False, 3)


def test_concurrent_appends_never_fork_the_chain(store_settings: Settings) -> None:
    """Threads on separate engines append to one tenant from its very first record (the head
    row is created race-safely) and to its chain afterwards."""
    stores = [open_store(store_settings) for _ in range(4)]
    try:
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def run(target: Store) -> None:
            barrier.wait()
            try:
                append_many(target, 10)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert verify(stores[0]) == (True, 40, None)
    finally:
        for s in stores:
            s.close()


# --- the Audit stage -----------------------------------------------------------------------


def test_rejection_is_audited_with_codes_only(store: Store) -> None:
    raw = sample().replace(b"<std:myNumber>", b"<std:myNumber>X", 1)
    message = Message(raw=raw, adapter="soap")
    report = Validator().validate(raw)
    message.add_findings(report.findings)
    message.envelope, message.service = report.envelope, report.service
    assert message.rejected and message.envelope is not None
    AuditStage(store.sessions)(message)
    tenant = message.envelope.client.tenant
    (record,) = records(store, tenant)
    assert record.event == "rejected"
    assert record.message_id == message.envelope.message_id
    assert record.actor == message.envelope.client.system
    assert record.detail["codes"] == sorted({f.code for f in report.findings})
    assert record.detail["service"] == "ResidentChangeNotice"
    dumped = json.dumps(record.detail, ensure_ascii=False)
    for value in personal_values(raw):
        assert value not in dumped


def test_unattributable_rejection_goes_to_the_pseudo_tenant(store: Store) -> None:
    message = Message(raw=b"not xml", adapter="rest")
    message.add_findings(Validator().validate(message.raw).findings)
    assert message.rejected
    AuditStage(store.sessions)(message)
    (record,) = records(store, UNATTRIBUTED_TENANT)
    assert record.message_id is None and record.actor is None
    assert record.detail == {"codes": ["RK-SEC006"], "adapter": "rest", "raw_bytes": 7}


def test_accepted_message_is_audited_once_by_the_store(store: Store) -> None:
    message = stage(store)(accepted(sample()))
    AuditStage(store.sessions)(message)
    with store.sessions() as session:
        assert count(session, AuditRecord) == 1


def test_conflict_is_audited_as_a_rejection(store: Store) -> None:
    from tests.test_store import with_message_id

    first = stage(store)(accepted(sample()))
    assert first.envelope is not None
    conflicting = stage(store)(accepted(with_message_id(sample(seed=5), first.envelope.message_id)))
    AuditStage(store.sessions)(conflicting)
    tenant = first.envelope.client.tenant
    events = [(r.event, r.detail.get("codes")) for r in records(store, tenant)]
    assert events == [("stored", None), ("rejected", ["RK-STO001"])]


def test_no_personal_data_in_any_audit_record(store: Store) -> None:
    """Store, resend, conflict and reject the sample person's messages, then scan every
    audit column for any of their personal values (name, 個人番号, address, …)."""
    from tests.test_store import with_message_id

    raw = sample()
    first = stage(store)(accepted(raw))
    stage(store)(accepted(raw))
    assert first.envelope is not None
    conflict = stage(store)(accepted(with_message_id(sample(seed=9), first.envelope.message_id)))
    AuditStage(store.sessions)(conflict)
    secrets = personal_values(raw) + personal_values(sample(seed=9))
    assert any(len(value) == 12 and value.isdigit() for value in secrets)  # a 個人番号
    with store.sessions() as session:
        rows = session.execute(text("SELECT * FROM audit_records")).all()
    dumped = json.dumps([list(map(str, row)) for row in rows], ensure_ascii=False)
    assert len(rows) == 3
    for value in secrets:
        assert value not in dumped, value
