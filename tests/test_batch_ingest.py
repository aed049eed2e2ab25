"""Batch ingest (``Hub.ingest_many``): every stage per message, one transaction per batch,
per-message results, nothing half-stored."""

from __future__ import annotations

import logging
import uuid

import pytest
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.hub import Hub
from bus.pipeline import STAGE_ORDER, Message, StageName
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.store.audit import verify_chain
from bus.store.ingest import StoreStage
from bus.store.models import AuditRecord, StoredMessage

LOOPBACK = "127.0.0.1"


def notice(seed: int, change_reason: str | None = None) -> bytes:
    document = build_message(MessageSpec("ResidentChangeNotice", seed))
    if change_reason is not None:
        reason = document.find(f".//{{{NS_STANDARD}}}changeReason")
        assert reason is not None and reason.text != change_reason
        reason.text = change_reason
    return serialize(document)


def stored_count(hub: Hub) -> int:
    with hub.store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(StoredMessage)) or 0)


def test_a_batch_gives_each_message_its_own_result(hub: Hub) -> None:
    first, second = notice(1, "101"), notice(2)
    conflicting = notice(1, "201")  # the same messageId, other content
    raws = [first, second, first, b"<not-a-message", conflicting]
    results = hub.ingest_many(raws, adapter="test", source_address=LOOPBACK)

    assert [m.raw for m in results] == raws
    stored, other, resent, broken, conflict = results
    assert stored.ack is not None and not stored.ack.duplicate, stored.findings
    assert other.ack is not None and not other.ack.duplicate
    assert resent.ack is not None and resent.ack.duplicate  # the same content again
    assert broken.ack is None and broken.rejected
    assert conflict.ack is None and "RK-STO001" in {f.code for f in conflict.findings}
    assert stored.trace == list(STAGE_ORDER)
    assert broken.trace[-1] is StageName.AUDIT and StageName.STORE not in broken.trace
    assert stored_count(hub) == 2
    assert hub.rejections.flush(10)  # the conflict's record is written after the answer
    with hub.store.sessions() as session:
        events = session.scalars(select(AuditRecord.event).order_by(AuditRecord.seq)).all()
        assert verify_chain(session, "412066").ok
    assert events.count("stored") == 2 and events.count("duplicate") == 1
    assert events.count("rejected") == 2  # the broken one (in the batch) and the conflict


def test_a_resent_batch_is_all_duplicates(hub: Hub) -> None:
    raws = [notice(seed) for seed in range(5)]
    first = hub.ingest_many(raws, adapter="test", source_address=LOOPBACK)
    assert all(m.ack is not None and not m.ack.duplicate for m in first)
    again = hub.ingest_many(raws, adapter="test", source_address=LOOPBACK)
    assert all(m.ack is not None and m.ack.duplicate for m in again)
    assert stored_count(hub) == 5


def test_a_failing_batch_is_stored_message_by_message(hub: Hub) -> None:
    """The batch's transaction fails after its inserts: it rolls back whole (otherwise the
    retry would find the messages and call them duplicates), then each is stored alone."""
    store = hub.pipeline.stages[STAGE_ORDER.index(StageName.STORE)]
    assert isinstance(store, StoreStage)
    raws = [notice(seed) for seed in range(10, 14)]
    messages = hub.ingest_many(raws[:0], adapter="test")  # nothing in, nothing out
    assert messages == []
    calls: list[int] = []

    def failing_once(session: Session) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise DatabaseError("INSERT …", {}, Exception("disk I/O error"))

    pending = _validated(hub, raws)
    store.store_many(pending, failing_once)
    assert calls == [0, 1]
    assert all(m.ack is not None and not m.ack.duplicate for m in pending)
    assert stored_count(hub) == 4


def _validated(hub: Hub, raws: list[bytes]) -> list[Message]:
    """Messages that ran the stages before Store (as a batch does)."""
    at_store = STAGE_ORDER.index(StageName.STORE)
    done = []
    for raw in raws:
        message = Message(raw=raw, adapter="test", source_address=LOOPBACK)
        for stage in hub.pipeline.stages[:at_store]:
            message = stage(message)
            message.trace.append(stage.name)
        assert not message.rejected, message.findings
        done.append(message)
    return done


def test_a_thousand_messages_commit_in_one_transaction(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    """A file import's chunk (1,000) is one transaction: more keys than one look-up
    statement takes (SQLite refuses an expression deeper than 1,000), no fallback."""
    template = notice(1)
    ids = [str(uuid.UUID(int=n)) for n in range(1000)]
    old = etree.fromstring(template).findtext(f".//{{{NS_ENVELOPE}}}messageId")
    assert old is not None
    raws = [template.replace(old.encode(), new.encode()) for new in ids]
    with caplog.at_level(logging.INFO, logger="bus.store.ingest"):
        results = hub.ingest_many(raws, adapter="test", source_address=LOOPBACK)
    assert all(m.ack is not None and not m.ack.duplicate for m in results)
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]
    assert stored_count(hub) == 1000
