"""The Store stage: transactional outbox, Idempotent Receiver, per-subject sequences, queries.

Every test runs on SQLite and on PostgreSQL (the ``store_settings`` fixture) against real
databases; messages are validated by the real validator.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bus.catalogue import load_catalogue
from bus.cli import app
from bus.hub import Hub
from bus.pipeline import Delivery, Message
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.settings import Settings
from bus.store.audit import verify_chain
from bus.store.db import Store, create_store_engine, open_store, session_factory
from bus.store.digest import content_digest, document_digest, service_element
from bus.store.ingest import Incoming, StoreStage, store_incoming
from bus.store.models import AuditRecord, IdempotencyKey, StoredMessage
from bus.store.models import Delivery as DeliveryRow
from bus.store.queries import (
    MessageStatus,
    StoreQueryError,
    list_messages,
    masked_body,
    replay,
    show_message,
)
from bus.store.sequences import SequenceKey, next_sequences
from bus.validation.validator import Validator

VALIDATOR = Validator()
SUBSCRIBERS = ("tainou", "shuno", "zeimu")


def retention(_service: str) -> timedelta:
    return timedelta(days=30)


class RecordingWakeups:
    """The wake-up channel as the Store stage sees it: records what it was asked to wake, and
    (when given a store) checks that what it wakes for is already committed."""

    def __init__(self, store: Store | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.visible: list[int] = []
        self._store = store
        self._lock = threading.Lock()

    def notify(self, destinations: Iterable[str]) -> None:
        with self._lock:
            self.calls.append(tuple(destinations))
            if self._store is not None:
                with self._store.sessions() as session:
                    self.visible.append(count(session, StoredMessage))


class FailingWakeups:
    def notify(self, destinations: Iterable[str]) -> None:
        raise ConnectionError("broker down")


def count(session: Session, model: type[object]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def sample(service: str = "ResidentChangeNotice", seed: int = 1) -> bytes:
    return serialize(build_message(MessageSpec(service, seed)))


def accepted(
    raw: bytes, destinations: Iterable[str] = SUBSCRIBERS, kind: str | None = None
) -> Message:
    """A message as Route hands it to Store: validated for real, destinations filled in."""
    report = VALIDATOR.validate(raw)
    assert report.valid, [f.code for f in report.findings]
    assert report.envelope is not None
    message = Message(raw=raw, adapter="test")
    message.document, message.envelope, message.service = (
        report.document,
        report.envelope,
        report.service,
    )
    envelope = report.envelope
    message.kind = kind or ("inquiry" if envelope.service.endswith("Inquiry") else "notification")
    message.deliveries = [
        Delivery(envelope.message_id, destination, envelope.client.tenant, envelope.subject)
        for destination in destinations
    ]
    return message


def with_message_id(raw: bytes, message_id: str) -> bytes:
    root = etree.fromstring(raw)
    root.find(".//{*}messageId").text = message_id  # type: ignore[union-attr]
    return serialize(root)


def rewrite_prefixes(raw: bytes) -> bytes:
    """The same message with other namespace prefixes, a default namespace for the service
    element and no indentation."""
    text_ = raw.decode()
    for old, new in (("std", "s"), ("env", "e"), ("ext", "x")):
        text_ = text_.replace(f"<{old}:", f"<{new}:").replace(f"</{old}:", f"</{new}:")
        text_ = text_.replace(f"xmlns:{old}=", f"xmlns:{new}=")
    text_ = text_.replace("<svc:", "<").replace("</svc:", "</")
    text_ = text_.replace('xmlns:svc="', 'xmlns="')
    rewritten = text_.encode()
    assert rewritten != raw
    root = etree.fromstring(rewritten, etree.XMLParser(remove_blank_text=True))
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def stage(store: Store, wakeups: object | None = None) -> StoreStage:
    return StoreStage(store.sessions, wakeups or RecordingWakeups(), retention)  # type: ignore[arg-type]


# --- the content digest -------------------------------------------------------------------


def test_digest_ignores_prefixes_and_layout() -> None:
    raw = sample()
    original = etree.fromstring(raw)
    rewritten = etree.fromstring(rewrite_prefixes(raw))
    assert etree.QName(service_element(rewritten)).localname == "ResidentChangeNotice"
    assert service_element(rewritten).prefix is None  # really written differently
    assert document_digest(original) == document_digest(rewritten)


def test_digest_changes_with_content() -> None:
    document = etree.fromstring(sample())
    before = document_digest(document)
    element = service_element(document).find(".//{*}processingDate")
    assert element is not None
    element.text = "2025-02-04"
    assert document_digest(document) != before


def test_digest_is_of_the_service_element_only() -> None:
    """A resend may carry another Header (a new issuedAt): same content, same digest."""
    document = etree.fromstring(sample())
    before = document_digest(document)
    issued = document.find(".//{*}issuedAt")
    assert issued is not None
    issued.text = "2026-04-02T09:00:00+09:00"
    assert document_digest(document) == before
    assert len(content_digest(service_element(document))) == 64


# --- the outbox ----------------------------------------------------------------------------


def test_store_commits_everything_then_acknowledges(store: Store) -> None:
    wakeups = RecordingWakeups(store)
    message = stage(store, wakeups)(accepted(sample()))
    assert not message.rejected
    assert message.ack is not None and not message.ack.duplicate
    assert message.ack.destinations == SUBSCRIBERS
    assert [d.sequence for d in message.deliveries] == [1, 1, 1]
    # The wake-up came after the commit: another session already saw the message.
    assert wakeups.calls == [SUBSCRIBERS] and wakeups.visible == [1]
    with store.sessions() as session:
        row = session.scalars(select(StoredMessage)).one()
        assert row.kind == "notification" and row.service == "ResidentChangeNotice"
        assert row.body.startswith(b"<env:PlatformMessage")
        assert row.expires_at is not None and row.received_at is not None
        assert row.expires_at - row.received_at == timedelta(days=30)
        deliveries = session.scalars(select(DeliveryRow).order_by(DeliveryRow.id)).all()
        assert [(d.destination, d.state, d.sequence) for d in deliveries] == [
            (name, "pending", 1) for name in SUBSCRIBERS
        ]
        assert {d.subject_key for d in deliveries} == {message.envelope.subject}  # type: ignore[union-attr]
        key = session.scalars(select(IdempotencyKey)).one()
        assert key.message_pk == row.id and key.content_digest == row.body_digest
        record = session.scalars(select(AuditRecord)).one()
        assert record.event == "stored" and record.message_id == row.message_id
        assert record.detail["destinations"] == list(SUBSCRIBERS)
        assert record.detail["digest"] == row.body_digest
        assert verify_chain(session, row.tenant).ok


def test_inquiry_is_stored_without_deliveries(store: Store) -> None:
    wakeups = RecordingWakeups()
    message = stage(store, wakeups)(accepted(sample("AddresseeInquiry"), destinations=()))
    assert message.ack is not None and message.ack.destinations == ()
    assert wakeups.calls == []
    with store.sessions() as session:
        assert session.scalars(select(StoredMessage.kind)).one() == "inquiry"
        assert count(session, DeliveryRow) == 0


def test_reply_is_stored(store: Store) -> None:
    message = stage(store)(accepted(sample("AddresseeInquiryReply"), (), kind="reply"))
    assert message.ack is not None
    with store.sessions() as session:
        row = session.scalars(select(StoredMessage)).one()
        assert (row.kind, row.service) == ("reply", "AddresseeInquiryReply")
        assert row.correlation_id == message.envelope.correlation_id  # type: ignore[union-attr]


def test_a_lost_wakeup_does_not_fail_a_committed_message(store: Store) -> None:
    message = stage(store, FailingWakeups())(accepted(sample()))
    assert message.ack is not None and not message.rejected


def test_rejected_message_is_not_stored(store: Store) -> None:
    from bus.errors import make_finding

    message = accepted(sample())
    message.add_findings([make_finding("RK-AUT001", path="/")])
    stage(store)(message)
    assert message.ack is None
    with store.sessions() as session:
        assert count(session, StoredMessage) == 0


# --- atomicity -----------------------------------------------------------------------------

_FAIL_SQLITE = (
    "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
)
_FAIL_PG = (
    "CREATE FUNCTION injected_failure() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} FOR EACH ROW "
    "EXECUTE FUNCTION injected_failure()",
)


def inject_failure(store: Store, table: str) -> None:
    """A real database failure at one step of the ingest transaction (a trigger)."""
    with store.engine.begin() as connection:
        if store.engine.dialect.name == "sqlite":
            connection.execute(text(_FAIL_SQLITE.format(table=table)))
        else:
            for statement in _FAIL_PG:
                connection.execute(text(statement.format(table=table)))


def assert_nothing_stored(store: Store) -> None:
    with store.sessions() as session:
        for model in (StoredMessage, DeliveryRow, IdempotencyKey, AuditRecord):
            assert count(session, model) == 0, model
        assert session.execute(text("SELECT count(*) FROM subject_sequences")).scalar() == 0


@pytest.mark.parametrize("table", ["deliveries", "audit_records"])
def test_failure_mid_transaction_leaves_nothing(store: Store, table: str) -> None:
    inject_failure(store, table)
    wakeups = RecordingWakeups()
    message = accepted(sample())
    with pytest.raises(DBAPIError, match="injected failure"):
        stage(store, wakeups)(message)
    assert message.ack is None and wakeups.calls == []
    assert all(d.sequence is None for d in message.deliveries)
    assert_nothing_stored(store)


@pytest.mark.postgres
def test_too_long_destination_leaves_nothing(postgres_url: str) -> None:
    """PostgreSQL enforces VARCHAR lengths: the 3rd delivery fails after the message, its key
    and two deliveries were written; all of it is rolled back."""
    opened = open_store(Settings(database_url=postgres_url))
    try:
        message = accepted(sample(), destinations=("tainou", "shuno", "x" * 41))
        with pytest.raises(DBAPIError):
            stage(opened)(message)
        assert message.ack is None
        assert_nothing_stored(opened)
    finally:
        opened.close()


# --- the Idempotent Receiver ---------------------------------------------------------------


def test_resend_gets_the_original_ack(store: Store) -> None:
    wakeups = RecordingWakeups()
    raw = sample()
    first = stage(store, wakeups)(accepted(raw))
    again = stage(store, wakeups)(accepted(raw))
    assert first.ack is not None and again.ack is not None
    assert again.ack.duplicate and not again.rejected
    assert (again.ack.message_id, again.ack.stored_at, again.ack.destinations) == (
        first.ack.message_id,
        first.ack.stored_at,
        first.ack.destinations,
    )
    assert wakeups.calls == [SUBSCRIBERS]  # nothing new to wake for
    with store.sessions() as session:
        assert count(session, StoredMessage) == 1
        assert count(session, DeliveryRow) == 3
        events = session.scalars(select(AuditRecord.event).order_by(AuditRecord.seq)).all()
        assert events == ["stored", "duplicate"]


def test_prefix_rewritten_resend_is_the_same_content(store: Store) -> None:
    raw = sample()
    first = stage(store)(accepted(raw))
    again = stage(store)(accepted(rewrite_prefixes(raw)))
    assert again.ack is not None and again.ack.duplicate
    assert first.ack is not None and again.ack.stored_at == first.ack.stored_at


def test_same_key_other_content_is_a_conflict(store: Store) -> None:
    raw = sample()
    stage(store)(accepted(raw))
    other = sample(seed=2)  # other content …
    message_id = etree.fromstring(raw).find(".//{*}messageId").text  # type: ignore[union-attr]
    assert message_id is not None
    conflicting = accepted(with_message_id(other, message_id))  # … under the same key
    # the same tenant and system: only the content differs
    assert conflicting.envelope is not None
    stage(store)(conflicting)
    assert conflicting.rejected and conflicting.ack is None
    assert [f.code for f in conflicting.findings] == ["RK-STO001"]
    assert message_id in conflicting.findings[0].message_en
    with store.sessions() as session:
        assert count(session, StoredMessage) == 1


def test_same_message_id_from_another_system_is_another_key(store: Store) -> None:
    raw = sample()
    stage(store)(accepted(raw))
    root = etree.fromstring(raw)
    root.find(".//{*}client/{*}system").text = "kokuho"  # type: ignore[union-attr]
    message = stage(store)(accepted(serialize(root)))
    assert message.ack is not None and not message.ack.duplicate
    assert [d.sequence for d in message.deliveries] == [2, 2, 2]  # same subject, next in line


def _engine_store(settings: Settings) -> Store:
    engine = create_store_engine(settings)
    return Store(engine, session_factory(engine))


def test_concurrent_ingest_of_one_key_stores_once(
    store_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Deterministic race: transaction A has written the key but not committed while B
    ingests the same message from another engine; B waits, then finds A's message and
    answers with A's acknowledgement (on PostgreSQL through the primary-key violation and a
    re-read; on SQLite BEGIN IMMEDIATE makes B wait at its start)."""
    caplog.set_level(logging.INFO, logger="bus.store.ingest")
    first, second = open_store(store_settings), _engine_store(store_settings)
    try:
        raw = sample()
        incoming = Incoming.from_message(accepted(raw), retention)
        written, release = threading.Event(), threading.Event()
        outcome: list[object] = []

        def transaction_a() -> None:
            from datetime import UTC, datetime

            with first.sessions.begin() as session:
                outcome.append(store_incoming(session, incoming, now=datetime.now(UTC)))
                written.set()
                assert release.wait(10)

        message_b = accepted(raw)
        a = threading.Thread(target=transaction_a)
        b = threading.Thread(target=lambda: stage(second)(message_b))
        a.start()
        assert written.wait(10)
        b.start()
        b.join(0.5)
        assert b.is_alive()  # B is blocked by A's uncommitted key
        release.set()
        a.join(10)
        b.join(10)
        assert not a.is_alive() and not b.is_alive()
        raced = "idempotency key raced" in caplog.text
        assert raced is (not store_settings.is_sqlite)  # PostgreSQL took the re-read path
        ack_a = outcome[0].ack  # type: ignore[attr-defined]
        assert message_b.ack is not None and message_b.ack.duplicate
        assert message_b.ack.stored_at == ack_a.stored_at
        assert message_b.ack.destinations == ack_a.destinations
        with first.sessions() as session:
            assert count(session, StoredMessage) == 1
            assert count(session, DeliveryRow) == len(SUBSCRIBERS)
    finally:
        first.close()
        second.close()


def test_many_threads_ingesting_one_message_store_it_once(store_settings: Settings) -> None:
    stores = [open_store(store_settings)] + [_engine_store(store_settings) for _ in range(3)]
    try:
        raw = sample()
        barrier = threading.Barrier(len(stores))
        results: list[Message] = []
        errors: list[BaseException] = []

        def run(target: Store) -> None:
            message = accepted(raw)
            barrier.wait()
            try:
                results.append(stage(target)(message))
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        acks = [m.ack for m in results]
        assert all(ack is not None for ack in acks) and len(acks) == len(stores)
        assert sum(not ack.duplicate for ack in acks if ack) == 1
        assert len({ack.stored_at for ack in acks if ack}) == 1
        with stores[0].sessions() as session:
            assert count(session, StoredMessage) == 1
            assert count(session, DeliveryRow) == len(SUBSCRIBERS)
    finally:
        for s in stores:
            s.close()


# --- sequences -----------------------------------------------------------------------------


@pytest.mark.ordering
def test_sequences_strictly_increase_per_subject_under_concurrency(
    store_settings: Settings,
) -> None:
    threads_n, per_thread = 4, 15
    stores = [open_store(store_settings)] + [
        _engine_store(store_settings) for _ in range(threads_n - 1)
    ]
    try:
        base = sample(seed=7)
        other_subject = sample(seed=8)  # another person: another subject
        seen: dict[int, list[tuple[str, int]]] = {i: [] for i in range(threads_n)}
        barrier = threading.Barrier(threads_n)
        errors: list[BaseException] = []

        def run(index: int) -> None:
            target = stores[index]
            barrier.wait()
            try:
                for n in range(per_thread):
                    raw = base if n % 3 else other_subject
                    message = accepted(with_message_id(raw, str(uuid.uuid4())))
                    stage(target)(message)
                    subject = message.envelope.subject  # type: ignore[union-attr]
                    for delivery in message.deliveries:
                        assert delivery.sequence is not None
                        seen[index].append((f"{delivery.destination}/{subject}", delivery.sequence))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        # Each thread saw strictly increasing numbers per key …
        for pairs in seen.values():
            last: dict[str, int] = {}
            for key, sequence in pairs:
                assert sequence > last.get(key, 0)
                last[key] = sequence
        # … and together they are exactly 1..n per key, with no gap or repeat.
        with stores[0].sessions() as session:
            rows = session.execute(
                select(DeliveryRow.destination, DeliveryRow.subject_key, DeliveryRow.sequence)
            ).all()
        per_key: dict[tuple[str, str], list[int]] = {}
        for destination, subject_key, sequence in rows:
            per_key.setdefault((destination, subject_key), []).append(sequence)
        assert len(per_key) == 2 * len(SUBSCRIBERS)
        for sequences in per_key.values():
            assert sorted(sequences) == list(range(1, len(sequences) + 1))
        assert sum(len(s) for s in per_key.values()) == threads_n * per_thread * 3
    finally:
        for s in stores:
            s.close()


# --- queries, masking, replay, CLI ---------------------------------------------------------


def personal_values(raw: bytes) -> list[str]:
    """The text of every personal item in a message (at least 4 characters: shorter codes
    such as 性別 '1' occur everywhere and prove nothing)."""
    by_tag = load_catalogue().by_tag
    values = []
    for element in etree.fromstring(raw).iter():
        item = by_tag.get(element.tag)
        if item is not None and item.personal and element.text and len(element.text) >= 4:
            values.append(element.text)
    return values


def test_show_masks_personal_data(store: Store) -> None:
    raw = sample()
    message = stage(store)(accepted(raw))
    assert message.envelope is not None
    secrets = personal_values(raw)
    assert len(secrets) > 15
    with store.sessions() as session:
        detail = show_message(session, message.envelope.message_id)
    shown = json.dumps(detail.as_dict(), ensure_ascii=False)
    for value in secrets:
        assert value not in shown, value
    assert message.envelope.subject and message.envelope.subject not in shown
    assert "＊" in detail.body and "ResidentChangeNotice" in detail.body
    assert [d.destination for d in detail.deliveries] == sorted(SUBSCRIBERS)
    assert [a.event for a in detail.audit] == ["stored"]
    assert detail.summary.status is MessageStatus.PENDING
    # Non-personal values stay readable.
    assert message.envelope.message_id in detail.body


def test_masked_body_masks_gaiji_alt_and_birth_iso() -> None:
    raw = (
        b'<env:PlatformMessage xmlns:env="urn:renkei:platform:envelope:1" '
        b'xmlns:svc="urn:renkei:platform:service:1" xmlns:std="urn:renkei:platform:standard:1">'
        b"<svc:ResidentChangeNotice>"
        b'<std:name alt="\xe9\xab\x98\xe6\xa9\x8b">\xee\x80\x80\xe6\xa9\x8b</std:name>'
        b'<std:dateOfBirth iso="1943-09-16" asGiven="false">S18</std:dateOfBirth>'
        b"<std:changeReason>107</std:changeReason>"
        b"</svc:ResidentChangeNotice></env:PlatformMessage>"
    )
    body = masked_body(raw)
    assert "高橋" not in body and "1943-09-16" not in body and "S18" not in body
    assert 'asGiven="false"' in body and "107" in body


def test_list_filters(store: Store) -> None:
    stage(store)(accepted(sample(seed=1)))
    stage(store)(accepted(sample("AddresseeInquiry", seed=2), ()))
    with store.sessions.begin() as session:
        session.execute(text("UPDATE deliveries SET state = 'dead'"))
    with store.sessions() as session:
        everything = list_messages(session)
        assert len(everything) == 2
        assert {m.status for m in everything} == {MessageStatus.DEAD, MessageStatus.STORED}
        assert [m.service for m in list_messages(session, status=MessageStatus.DEAD)] == [
            "ResidentChangeNotice"
        ]
        assert [m.kind for m in list_messages(session, service="AddresseeInquiry")] == ["inquiry"]
        assert list_messages(session, status=MessageStatus.PENDING) == []
        assert list_messages(session, tenant="999999") == []
        assert len(list_messages(session, limit=1)) == 1


def test_replay_appends_at_the_end_of_the_subject(store: Store) -> None:
    first = stage(store)(accepted(sample(seed=3)))
    later = stage(store)(accepted(with_message_id(sample(seed=3), str(uuid.uuid4()))))
    assert first.envelope is not None and later.deliveries[0].sequence == 2
    report = replay(
        store.sessions, first.envelope.message_id, reason="受付番号 42", to="shuno", actor="op"
    )
    assert report.deliveries == (("shuno", 3),)
    everywhere = replay(store.sessions, first.envelope.message_id, reason="again")
    assert everywhere.deliveries == (("shuno", 4), ("tainou", 3), ("zeimu", 3))
    with store.sessions() as session:
        record = session.scalars(
            select(AuditRecord).where(AuditRecord.event == "replayed").order_by(AuditRecord.seq)
        ).first()
        assert record is not None and "受付番号" not in json.dumps(record.detail)
        assert record.detail["destinations"] == ["shuno"]
        assert verify_chain(session, first.envelope.client.tenant).ok
    with pytest.raises(StoreQueryError) as not_a_destination:
        replay(store.sessions, first.envelope.message_id, reason="x", to="kokuho")
    assert not_a_destination.value.finding.code == "RK-STO004"
    with pytest.raises(StoreQueryError) as missing:
        replay(store.sessions, str(uuid.uuid4()), reason="x")
    assert missing.value.finding.code == "RK-STO002"


def test_show_needs_the_tenant_when_an_id_is_ambiguous(store: Store) -> None:
    raw = sample()
    message = stage(store)(accepted(raw))
    root = etree.fromstring(raw)
    root.find(".//{*}client/{*}system").text = "kokuho"  # type: ignore[union-attr]
    stage(store)(accepted(serialize(root)))
    assert message.envelope is not None
    with store.sessions() as session, pytest.raises(StoreQueryError) as ambiguous:
        show_message(session, message.envelope.message_id)
    assert ambiguous.value.finding.code == "RK-STO003"


def one_stored_message(store_settings: Settings) -> tuple[Message, dict[str, str]]:
    """A store holding one accepted message, and the environment the CLI needs for it."""
    opened = open_store(store_settings)
    try:
        message = stage(opened)(accepted(sample()))
    finally:
        opened.close()
    env = {
        "RENKEI_DATA_DIR": str(store_settings.data_dir),
        "RENKEI_DATABASE_URL": store_settings.database_url or "",
    }
    return message, env


def test_cli_messages_and_audit(store_settings: Settings) -> None:
    message, env = one_stored_message(store_settings)
    assert message.envelope is not None
    runner = CliRunner()
    listed = runner.invoke(app, ["messages", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [m["message_id"] for m in json.loads(listed.stdout)] == [message.envelope.message_id]
    shown = runner.invoke(app, ["messages", "show", message.envelope.message_id], env=env)
    assert shown.exit_code == 0, shown.output
    assert "ResidentChangeNotice" in shown.stdout
    for value in personal_values(message.raw):
        assert value not in shown.stdout
    missing = runner.invoke(app, ["messages", "show", str(uuid.uuid4())], env=env)
    assert missing.exit_code == 1 and "RK-STO002" in missing.output
    replayed = runner.invoke(
        app,
        ["messages", "replay", message.envelope.message_id, "--to", "tainou", "--reason", "r"],
        env=env,
    )
    assert replayed.exit_code == 0 and "seq 2" in replayed.stdout
    verified = runner.invoke(app, ["audit", "verify", "--json"], env=env)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)[message.envelope.client.tenant]["records"] == 2
    opened = open_store(store_settings)
    try:
        with opened.sessions.begin() as session:
            session.execute(text("UPDATE audit_records SET actor = 'mallory' WHERE seq = 1"))
    finally:
        opened.close()
    broken = runner.invoke(app, ["audit", "verify"], env=env)
    assert broken.exit_code == 1 and "RK-AUD001" in broken.stdout
    purged = runner.invoke(app, ["purge", "--json"], env=env)
    assert purged.exit_code == 0 and json.loads(purged.stdout) == {"messages": 0, "deliveries": 0}


@pytest.mark.parametrize(
    "args",
    [
        ("messages", "list", "--since", "yesterday"),
        ("messages", "list", "--since", "2026-13-01"),
        ("messages", "list", "--since", "令和8年2月30日"),
        ("audit", "verify", "--from", "bad"),
        ("audit", "verify", "--to", "2026-02-30"),
    ],
)
def test_cli_refuses_an_unreadable_date(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A coded usage error (RK-CON004, as the console's date fields), never a traceback."""
    env = {"RENKEI_DATA_DIR": str(tmp_path / "data"), "RENKEI_DATABASE_URL": ""}
    refused = CliRunner().invoke(app, list(args), env=env)
    assert refused.exit_code == 2, refused.output
    assert isinstance(refused.exception, SystemExit)
    assert "RK-CON004" in refused.output and args[-2] in refused.output


def test_cli_reads_the_dates_the_console_reads(store_settings: Settings) -> None:
    message, env = one_stored_message(store_settings)
    assert message.envelope is not None
    for since, found in (("令和2年1月1日", 1), ("R99.01.01", 0), ("2020-01-01T00:00+09:00", 1)):
        listed = CliRunner().invoke(app, ["messages", "list", "--since", since, "--json"], env=env)
        assert listed.exit_code == 0, listed.output
        assert len(json.loads(listed.stdout)) == found, since


@pytest.mark.parametrize("reason", ["", "  ", "x" * 201])
def test_cli_replay_refuses_a_blank_or_long_reason(store_settings: Settings, reason: str) -> None:
    message, env = one_stored_message(store_settings)
    assert message.envelope is not None
    args = ["messages", "replay", message.envelope.message_id, "--reason", reason]
    refused = CliRunner().invoke(app, args, env=env)
    assert refused.exit_code == 2 and "RK-CON002" in refused.output, refused.output
    opened = open_store(store_settings)
    try:
        with opened.sessions() as session:
            assert session.scalar(select(func.count()).select_from(DeliveryRow)) == len(
                message.deliveries
            )
    finally:
        opened.close()


def test_next_sequences_hands_out_repeated_keys_in_order(store: Store) -> None:
    a = SequenceKey.of("412015", "tainou", "1")
    b = SequenceKey.of("412015", "tainou", None)
    with store.sessions.begin() as session:
        assert next_sequences(session, [a, b, a]) == [1, 1, 2]
        assert next_sequences(session, [b, a, a, a]) == [2, 3, 4, 5]
        assert next_sequences(session, []) == []
    with store.sessions() as session:  # committed
        assert next_sequences(session, [a]) == [6]


@pytest.mark.parametrize(("message_id", "tenant"), [("\x00", None), ("a\x00b", "412066")])
def test_an_id_with_a_nul_is_a_message_that_does_not_exist(
    hub: Hub, message_id: str, tenant: str | None
) -> None:
    """No stored id holds NUL; PostgreSQL refuses to compare with one (a 500 from the status
    GET ``/api/v1/messages/%00``), SQLite answers nothing: both are RK-STO002."""
    with hub.store.sessions() as session, pytest.raises(StoreQueryError) as refused:
        show_message(session, message_id, tenant)
    assert refused.value.finding.code == "RK-STO002"
    assert "\x00" not in refused.value.finding.message_en
