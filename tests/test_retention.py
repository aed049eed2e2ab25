"""Retention and purge: expired, resolved messages go; unresolved ones stay; idempotency keys
and the audit chain survive. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from bus.pipeline import Message
from bus.settings import Settings
from bus.store.audit import verify_chain
from bus.store.db import Store, open_store
from bus.store.models import (
    AuditRecord,
    DeliveryAttempt,
    IdempotencyKey,
    StoredMessage,
)
from bus.store.models import Delivery as DeliveryRow
from bus.store.retention import purge
from tests.test_store import accepted, count, sample, stage, with_message_id

LATER = datetime.now(UTC) + timedelta(days=31)  # past the tests' 30-day retention


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    opened = open_store(store_settings)
    yield opened
    opened.close()


def ingest(store: Store, seed: int = 1, service: str = "ResidentChangeNotice") -> Message:
    raw = with_message_id(sample(service, seed), str(uuid.uuid4()))
    destinations = () if service.endswith("Inquiry") else ("tainou", "shuno")
    message = stage(store)(accepted(raw, destinations))
    assert message.ack is not None and message.envelope is not None
    return message


def set_states(store: Store, message: Message, state: str) -> None:
    assert message.envelope is not None
    with store.sessions.begin() as session:
        pk = session.scalars(
            select(StoredMessage.id).where(StoredMessage.message_id == message.envelope.message_id)
        ).one()
        session.execute(update(DeliveryRow).where(DeliveryRow.message_pk == pk).values(state=state))


def stored_ids(store: Store) -> set[str]:
    with store.sessions() as session:
        return set(session.scalars(select(StoredMessage.message_id)))


def test_purge_removes_expired_resolved_messages_only(store: Store) -> None:
    delivered = ingest(store, 1)
    discarded = ingest(store, 2)
    pending = ingest(store, 3)
    dead = ingest(store, 4)
    inquiry = ingest(store, 5, "AddresseeInquiry")
    set_states(store, delivered, "delivered")
    set_states(store, discarded, "discarded")
    set_states(store, dead, "dead")
    with store.sessions.begin() as session:  # an error history to be purged with its delivery
        delivery_id = session.scalars(select(DeliveryRow.id).order_by(DeliveryRow.id)).first()
        session.add(DeliveryAttempt(delivery_id=delivery_id, attempt=1, at=LATER, outcome="retry"))

    assert purge(store.sessions) == purge(store.sessions, datetime.now(UTC))  # nothing expired
    assert len(stored_ids(store)) == 5

    report = purge(store.sessions, LATER)
    assert (report.messages, report.deliveries) == (3, 4)
    ids = {m.envelope.message_id for m in (pending, dead)}  # type: ignore[union-attr]
    assert stored_ids(store) == ids
    with store.sessions() as session:
        assert count(session, DeliveryRow) == 4
        assert count(session, DeliveryAttempt) == 0
        keys = session.scalars(select(IdempotencyKey)).all()
        assert len(keys) == 5  # every key stays …
        assert sum(key.message_pk is None for key in keys) == 3  # … purged ones point nowhere
    assert inquiry.envelope is not None


def test_chain_still_verifies_after_purge(store: Store) -> None:
    first = ingest(store, 1)
    set_states(store, first, "delivered")
    ingest(store, 2)
    assert first.envelope is not None
    tenant = first.envelope.client.tenant
    purge(store.sessions, LATER)
    with store.sessions() as session:
        report = verify_chain(session, tenant)
        assert report.ok and report.records == 3
        purged = session.scalars(select(AuditRecord).where(AuditRecord.event == "purged")).one()
        assert purged.tenant == tenant and purged.message_id is None
        assert purged.detail["messages"] == 1 and purged.detail["deliveries"] == 2


def test_late_resend_after_purge_gets_the_original_ack(store: Store) -> None:
    message = ingest(store, 1)
    set_states(store, message, "delivered")
    purge(store.sessions, LATER)
    assert stored_ids(store) == set()
    again = stage(store)(accepted(message.raw))
    assert again.ack is not None and again.ack.duplicate
    assert message.ack is not None and again.ack.stored_at == message.ack.stored_at
    assert again.ack.destinations == ("tainou", "shuno")
    assert stored_ids(store) == set()  # recognised, not stored again


def test_purge_works_in_batches(store: Store) -> None:
    messages = [ingest(store, seed) for seed in range(5)]
    for message in messages:
        set_states(store, message, "delivered")
    report = purge(store.sessions, LATER, batch=2)
    assert (report.messages, report.deliveries) == (5, 10)
    with store.sessions() as session:
        events = session.execute(
            text("SELECT detail FROM audit_records WHERE event = 'purged' ORDER BY id")
        ).all()
        assert len(events) == 3  # 2 + 2 + 1
        tenant = messages[0].envelope.client.tenant  # type: ignore[union-attr]
        assert verify_chain(session, tenant).ok
