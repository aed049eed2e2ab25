"""The assembled hub end to end: ingest through every stage, workers, receivers, request-reply."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from lxml import etree
from sqlalchemy import func, select

from bus.catalogue import NS_STANDARD
from bus.hub import Hub
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.audit import verify_chain
from bus.store.models import AuditRecord, StoredMessage
from tests.support.receivers import Receiver, config_dir_for, free_port, receiver_factory, wait_for

receivers = pytest.fixture(receiver_factory, name="receivers")
FAST_RETRY = {"base_delay": "PT0.05S", "max_delay": "PT0.5S", "max_attempts": 50, "max_age": "PT1H"}
ALL_SUBSCRIBERS = ("zeimu", "kokuho", "shuno", "kotei", "tainou")
MOVE_OUT = "201"  # 国内転出: the conditional subscriber tainou gets it
MOVE_IN = "101"  # 国内転入: tainou does not


def resident_notice(seed: int, change_reason: str) -> bytes:
    document = build_message(MessageSpec("ResidentChangeNotice", seed))
    reason = document.find(f".//{{{NS_STANDARD}}}changeReason")
    assert reason is not None
    reason.text = change_reason
    return serialize(document)


@pytest.fixture
def running(
    tmp_path: Path, receivers: Callable[[str], Receiver], store_settings: Settings
) -> Iterator[tuple[Hub, dict[str, Receiver]]]:
    started = {name: receivers(name).start() for name in (*ALL_SUBSCRIBERS, "juki")}
    config = config_dir_for(tmp_path, {n: r.port for n, r in started.items()}, retry=FAST_RETRY)
    hub = Hub.open(store_settings.model_copy(update={"config_dir": config}))
    pool = hub.workers(2)
    pool.start()
    try:
        yield hub, started
    finally:
        pool.stop()
        hub.close()


def test_notification_fans_out_to_the_routed_subscribers(
    running: tuple[Hub, dict[str, Receiver]],
) -> None:
    hub, started = running
    moving = hub.ingest(resident_notice(1, MOVE_OUT), adapter="test", source_address="127.0.0.1")
    staying = hub.ingest(resident_notice(2, MOVE_IN), adapter="test", source_address="127.0.0.1")
    for message in (moving, staying):
        assert message.ack is not None, [f.message_en for f in message.findings]
    assert moving.envelope is not None and staying.envelope is not None
    assert set(moving.ack.destinations) == set(ALL_SUBSCRIBERS)  # type: ignore[union-attr]
    assert "tainou" not in staying.ack.destinations  # type: ignore[union-attr]
    wait_for(
        lambda: all(
            moving.envelope.message_id in started[s].applied()  # type: ignore[union-attr]
            for s in ALL_SUBSCRIBERS
        ),
        timeout=30,
    )
    wait_for(lambda: staying.envelope.message_id in started["zeimu"].applied(), timeout=30)  # type: ignore[union-attr]
    assert staying.envelope.message_id not in started["tainou"].applied()
    with hub.store.sessions() as session:
        assert verify_chain(session, "412066").ok


def test_resend_is_acknowledged_once_and_delivered_once(
    running: tuple[Hub, dict[str, Receiver]],
) -> None:
    hub, started = running
    raw = resident_notice(3, MOVE_OUT)
    first = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    again = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert first.ack is not None and again.ack is not None
    assert again.ack.duplicate and again.ack.stored_at == first.ack.stored_at
    wait_for(lambda: first.ack.message_id in started["kotei"].applied(), timeout=30)  # type: ignore[union-attr]
    with hub.store.sessions() as session:
        count = session.scalar(select(func.count()).select_from(StoredMessage))
    assert count == 1
    assert [r for r in started["kotei"].records() if r["duplicate"]] == []


def test_inquiry_is_answered_by_its_provider(running: tuple[Hub, dict[str, Receiver]]) -> None:
    hub, _ = running
    raw = serialize(build_message(MessageSpec("AddresseeInquiry", 4)))
    message = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.ack is not None, [f.message_en for f in message.findings]
    assert message.reply is not None and message.reply.envelope is not None
    assert message.envelope is not None
    assert message.reply.envelope.correlation_id == message.envelope.message_id
    assert message.reply.envelope.message_id != message.envelope.message_id
    with hub.store.sessions() as session:
        kinds = sorted(session.scalars(select(StoredMessage.kind)))
    assert kinds == ["inquiry", "reply"]


def test_an_inquiry_sent_again_gets_its_stored_reply(
    running: tuple[Hub, dict[str, Receiver]],
) -> None:
    """A caller's retry with the same messageId (its answer was lost) gets the reply stored
    for it: the provider is not asked again and no second copy of the resident's data is
    stored (each resend used to add one)."""
    hub, started = running
    raw = serialize(build_message(MessageSpec("AddresseeInquiry", 6)))
    first = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    again = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert first.reply is not None and again.reply is not None
    assert again.ack is not None and again.ack.duplicate
    assert first.reply.envelope is not None and again.reply.envelope is not None
    assert again.reply.envelope.message_id == first.reply.envelope.message_id
    assert first.reply.document is not None and again.reply.document is not None
    same = [etree.tostring(r.document, method="c14n") for r in (first.reply, again.reply)]  # type: ignore[union-attr]
    assert same[0] == same[1]
    assert len(started["juki"].records()) == 1
    with hub.store.sessions() as session:
        kinds = sorted(session.scalars(select(StoredMessage.kind)))
    assert kinds == ["inquiry", "reply"]


def test_unknown_caller_is_refused_and_audited(running: tuple[Hub, dict[str, Receiver]]) -> None:
    hub, _ = running
    message = hub.ingest(resident_notice(5, MOVE_OUT), adapter="test", source_address="10.1.2.3")
    assert message.ack is None
    assert [f.code for f in message.findings] == ["RK-AUT001"]
    assert hub.rejections.flush(10)  # a refusal's record is written after the answer
    with hub.store.sessions() as session:
        events = list(
            session.scalars(select(AuditRecord.event).where(AuditRecord.tenant != ADMIN_CHAIN))
        )
        stored = session.scalar(select(func.count()).select_from(StoredMessage))
    assert events == ["rejected"] and stored == 0


def test_a_subscriber_not_granted_for_the_tenant_gets_nothing(
    tmp_path: Path, receivers: Callable[[str], Receiver]
) -> None:
    config = config_dir_for(tmp_path, {}, retry=FAST_RETRY)
    access = config / "access.yaml"
    document = yaml.safe_load(access.read_text(encoding="utf-8"))
    for rule in document["access"]:
        if rule["system"] == "kotei":
            rule["tenants"] = ["412074"]  # 鹿島市 only; the sample message is 武雄市's
    access.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        message = hub.ingest(
            resident_notice(6, MOVE_OUT), adapter="test", source_address="127.0.0.1"
        )
        assert message.ack is not None
        assert "kotei" not in message.ack.destinations
        assert "zeimu" in message.ack.destinations
    finally:
        hub.close()


def test_renkei_serve_delivers_what_others_stored(
    tmp_path: Path, receivers: Callable[[str], Receiver]
) -> None:
    """The embedded default: one `renkei serve` process dispatches while short writers store."""
    started = {name: receivers(name).start() for name in ALL_SUBSCRIBERS}
    config = config_dir_for(tmp_path, {n: r.port for n, r in started.items()}, retry=FAST_RETRY)
    data = tmp_path / "data"
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "RENKEI_CONFIG_DIR": str(config)}
    env.pop("RENKEI_DATABASE_URL", None)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("renkei")), "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    hub = Hub.open(Settings(data_dir=data, config_dir=config))
    try:
        ids = []
        for seed in range(10, 15):
            message = hub.ingest(
                resident_notice(seed, MOVE_OUT), adapter="test", source_address="127.0.0.1"
            )
            assert message.ack is not None
            ids.append(message.ack.message_id)
        wait_for(lambda: all(i in started["tainou"].applied() for i in ids), timeout=60)
    finally:
        hub.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_prefix_rewritten_message_is_the_same_message(
    running: tuple[Hub, dict[str, Receiver]],
) -> None:
    hub, _ = running
    raw = resident_notice(7, MOVE_OUT)
    rewritten = (
        raw.replace(b"std:", b"s0:")
        .replace(b"xmlns:std=", b"xmlns:s0=")
        .replace(b"svc:", b"v:")
        .replace(b"xmlns:svc=", b"xmlns:v=")
    )
    assert rewritten != raw
    etree.fromstring(rewritten)  # still well-formed
    first = hub.ingest(raw, adapter="test", source_address="127.0.0.1")
    second = hub.ingest(rewritten, adapter="test", source_address="127.0.0.1")
    assert first.ack is not None and second.ack is not None
    assert second.ack.duplicate
    assert set(second.ack.destinations) == set(first.ack.destinations)
