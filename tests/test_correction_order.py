"""A 訂正 that moves a record to another subject (宛名番号 X → Y) and the later messages of
that new subject, through the one ingest pipeline and a dispatch worker's claims
(docs/dispatch.md, 取消・訂正).

The 訂正 is ordered on its OWN subject (Y) and waits for its original's delivery at each
destination (``waits_for``), so it waits while the original is retried or dead-lettered there,
and a later 転出 for Y waits behind the 訂正 that created Y's record. A 取消 with its
original's subject keeps the original's key. On SQLite and PostgreSQL (the claim's SQL
differs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert, inspect, select, text, update
from sqlalchemy.orm import Session

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from bus.dispatch.worker import Worker
from bus.hub import Hub
from bus.pipeline import Message
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.samplegen.values import TOWNS
from bus.settings import Settings
from bus.store.models import Delivery, DeliveryState, StoredMessage
from bus.store.queries import show_message
from tests.support.envelopes import set_relates_to

NOTICE = "ResidentChangeNotice"
DESTINATION = "zeimu"  # every 住民異動通知 goes there (samples/config/routes.yaml)
X, Y = "1000000016", "2000000013"  # 宛名番号 (valid M11 check digits)


@dataclass
class Recording:
    sent: list[tuple[str, str]] = field(default_factory=list)  # (destination, messageId)

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        self.sent.append((message.destination, message.message_id))
        return SendResult(Outcome.DELIVERED)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened = Hub.open(Settings(data_dir=tmp_path / "data", database_url=url, dispatch_workers=0))
    try:
        yield opened
    finally:
        opened.close()


def _notice(hub: Hub, subject: str, *, relates_to: str | None = None) -> str:
    """A 住民異動通知 of 武雄市 from juki for ``subject`` through the pipeline: its id."""
    document = build_message(MessageSpec(NOTICE, uuid.uuid4().int % 10_000, TOWNS[0]))
    header = document[0]
    message_id = str(uuid.uuid4())
    header.find(f"{{{NS_ENVELOPE}}}messageId").text = message_id  # type: ignore[union-attr]
    header.find(f"{{{NS_ENVELOPE}}}subject").text = subject  # type: ignore[union-attr]
    document.find(f".//{{{NS_STANDARD}}}changeReason").text = "201"  # type: ignore[union-attr]
    if relates_to is not None:
        set_relates_to(header, relates_to)
    message: Message = hub.ingest(serialize(document), adapter="test", source_address="127.0.0.1")
    assert message.ack is not None and DESTINATION in message.ack.destinations, [
        f.code for f in message.findings
    ]
    return message_id


def _hold(hub: Hub, message_id: str, how: str) -> None:
    """The message's delivery to DESTINATION is being retried (due in an hour), dead, or
    (``release``) due now again; ``discarded`` gives it up."""
    values: dict[str, object] = {
        "dead": {"state": DeliveryState.DEAD.value},
        "retrying": {"next_attempt_at": datetime.now(UTC) + timedelta(hours=1), "attempts": 1},
        "release": {"next_attempt_at": datetime.now(UTC) - timedelta(seconds=1)},
        "discarded": {"state": DeliveryState.DISCARDED.value},
    }[how]
    with hub.store.sessions.begin() as session:
        session.execute(
            update(Delivery).where(Delivery.id == _delivery(hub, message_id).id).values(**values)
        )


def _delivery(hub: Hub, message_id: str) -> Delivery:
    """The message's (one) delivery to DESTINATION."""
    with hub.store.sessions() as session:
        pk = session.scalar(select(StoredMessage.id).where(StoredMessage.message_id == message_id))
        return session.scalars(
            select(Delivery).where(Delivery.message_pk == pk, Delivery.destination == DESTINATION)
        ).one()


def _waiting_for(hub: Hub, message_id: str) -> str | None:
    """``waiting for`` of the message's delivery to DESTINATION (``renkei messages show``)."""
    with hub.store.sessions() as session:
        shown = show_message(session, message_id)
    (waiting,) = [d.waiting_for for d in shown.deliveries if d.destination == DESTINATION]
    return waiting


def _sent(hub: Hub) -> list[str]:
    """The message ids one worker sends to DESTINATION now, in order."""
    recording = Recording()
    worker = Worker(
        hub.store.sessions,
        lambda: hub.config.current().index,
        None,
        "correction-order-test",
        transports={"http": recording, "soap": recording},
        send_concurrency=1,
    )
    while worker.run_once():
        pass
    worker.close()
    return [message_id for destination, message_id in recording.sent if destination == DESTINATION]


@pytest.mark.parametrize("how", ["retrying", "dead"])
def test_correction_waits_behind_its_original(hub: Hub, how: str) -> None:
    """The part that holds today: the 訂正 (new subject Y) waits behind its original (X)."""
    original = _notice(hub, X)
    _hold(hub, original, how)
    correction = _notice(hub, Y, relates_to=original)
    assert correction not in _sent(hub)


@pytest.mark.parametrize("how", ["retrying", "dead"])
def test_later_message_of_the_new_subject_waits_for_the_correction(hub: Hub, how: str) -> None:
    original = _notice(hub, X)
    _hold(hub, original, how)
    correction = _notice(hub, Y, relates_to=original)
    later = _notice(hub, Y)  # a 転出 for the record the 訂正 moved to Y
    other = _notice(hub, "3000000010")  # an unrelated subject flows on
    sent = _sent(hub)
    assert other in sent
    assert correction not in sent
    assert later not in sent, "the 転出 for Y overtook the 訂正 that moved the record to Y"


@pytest.mark.parametrize("how", ["release", "discarded"])
def test_once_the_original_is_done_the_correction_goes_then_the_new_subject(
    hub: Hub, how: str
) -> None:
    """The 訂正 is keyed on Y, waits for its original's delivery by id (shown as ``waiting
    for``), and goes once that is delivered or discarded — before the later 転出 for Y."""
    original = _notice(hub, X)
    _hold(hub, original, "dead" if how == "discarded" else "retrying")
    correction = _notice(hub, Y, relates_to=original)
    later = _notice(hub, Y)
    row, held = _delivery(hub, correction), _delivery(hub, original)
    assert (row.subject_key, row.waits_for) == (Y, held.id)
    assert _delivery(hub, later).waits_for is None
    state = "dead" if how == "discarded" else "pending"
    assert _waiting_for(hub, correction) == f"#{held.id} {state}"
    assert _waiting_for(hub, later) == f"#{row.id} pending"  # its own subject's order
    assert _sent(hub) == []
    _hold(hub, original, how)
    sent = _sent(hub)
    expected = [correction, later] if how == "discarded" else [original, correction, later]
    assert sent == expected
    assert _waiting_for(hub, correction) is None


def test_a_cancellation_with_its_originals_subject_keeps_its_key(hub: Hub) -> None:
    """A 取消 (same subject X) is ordered on X after its original, as before: no ``waits_for``,
    and later messages of X wait behind it."""
    original = _notice(hub, X)
    cancellation = _notice(hub, X, relates_to=original)
    later = _notice(hub, X)
    rows = [_delivery(hub, m) for m in (original, cancellation, later)]
    assert [(r.subject_key, r.waits_for) for r in rows] == [(X, None)] * 3
    assert [r.sequence for r in rows] == sorted(r.sequence for r in rows)
    _hold(hub, cancellation, "dead")
    assert _sent(hub) == [original]
    assert _waiting_for(hub, later) == f"#{rows[1].id} dead"


def test_a_later_message_of_the_old_subject_no_longer_waits_behind_the_correction(
    hub: Hub,
) -> None:
    """The record left X: a later message of X follows X's order only (the original's), not
    the 訂正 — which holds Y's. A 取消 of the 訂正 follows the 訂正 whatever its subject."""
    original = _notice(hub, X)
    assert _sent(hub) == [original]
    correction = _notice(hub, Y, relates_to=original)
    _hold(hub, correction, "dead")
    later_x, later_y = _notice(hub, X), _notice(hub, Y)
    undo = _notice(hub, X, relates_to=correction)  # 取消 of the 訂正: back to X
    assert _delivery(hub, undo).waits_for == _delivery(hub, correction).id
    assert _sent(hub) == [later_x]
    assert later_y not in _sent(hub) and undo not in _sent(hub)


def test_a_purged_original_holds_nothing(hub: Hub) -> None:
    """``waits_for`` names a delivery by id without a foreign key: once it is no longer
    stored (retention purges only resolved ones) the 訂正 flows."""
    original = _notice(hub, X)
    _hold(hub, original, "retrying")
    correction = _notice(hub, Y, relates_to=original)
    with hub.store.sessions.begin() as session:
        session.execute(delete(StoredMessage).where(StoredMessage.message_id == original))
    assert _delivery(hub, correction).waits_for is not None
    assert _waiting_for(hub, correction) is None
    assert _sent(hub) == [correction]


def test_migration_0010_adds_waits_for_to_stored_deliveries(engine: Engine) -> None:
    """A store at 0009 with a pending delivery: after the upgrade it waits for nothing and is
    claimable; the downgrade drops the column again (SQLite rebuilds the table)."""
    from alembic import command

    from bus.dispatch.claims import claim
    from bus.store.db import _alembic_config, migrate
    from tests.support.store_rows import pending_delivery

    now = datetime.now(UTC)
    message = {
        "id": 1,
        "message_id": "m1",
        "tenant": "412066",
        "system": "houmu",
        "service": "RegistrationNotice",
        "kind": "notification",
        "body": b"<m/>",
        "body_digest": "0" * 64,
        "received_at": now,
    }
    columns = ", ".join(pending_delivery(1, now))
    values = ", ".join(f":{name}" for name in pending_delivery(1, now))
    command.upgrade(_alembic_config(engine), "0009_destination_holds")
    with engine.begin() as connection:
        connection.execute(insert(StoredMessage.__table__).values(**message))
        connection.execute(
            text(f"INSERT INTO deliveries ({columns}) VALUES ({values})"),
            pending_delivery(1, now),
        )
    migrate(engine)
    with Session(engine) as session, session.begin():
        assert session.scalars(select(Delivery.waits_for)).all() == [None]
        claimed = claim(session, "w", now + timedelta(seconds=1), timedelta(minutes=1), 10, set())
        assert [d.message_pk for d in claimed] == [1]
    command.downgrade(_alembic_config(engine), "0009_destination_holds")
    assert "waits_for" not in {c["name"] for c in inspect(engine).get_columns("deliveries")}
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM deliveries")) == 1
