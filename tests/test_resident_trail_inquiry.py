"""The resident trail of a 宛名照会 (request-reply: no delivery rows): the inquiry about the
resident went to the provider that answered, and the provider's reply — the resident's
record — went back to the system that asked. A real hub asking a real provider over HTTP on
127.0.0.1 (docs/data-protection.md, 開示請求・提供記録への対応)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select

from bus.hub import Hub
from bus.settings import Settings
from bus.store.models import StoredMessage
from bus.store.trail import resident_trail
from tests.support.capture_server import CaptureServer
from tests.support.receivers import config_dir_for

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "messages"
INQUIRY = (SAMPLES / "AddresseeInquiry" / "valid-full.xml").read_bytes()
REPLY = (SAMPLES / "AddresseeInquiryReply" / "valid-full.xml").read_bytes()
ENV = "{urn:renkei:platform:envelope:1}"
TOWN = "412066"  # the inquiry's tenant (tainou asks juki)
ASKED_ABOUT = "3087382140"  # the inquiry's subject (宛名番号)
REPLY_SUBJECT = "6214691882"  # the sample reply's own subject: found by its correlationId


def provider_reply(path: str, request: bytes) -> bytes | None:
    if path != "/juki":
        return None
    request_id = etree.fromstring(request).findtext(f"{ENV}Header/{ENV}messageId")
    reply = etree.fromstring(REPLY)
    header = reply.find(f"{ENV}Header")
    assert header is not None and request_id is not None
    header.find(f"{ENV}messageId").text = str(uuid.uuid4())  # type: ignore[union-attr]
    header.find(f"{ENV}correlationId").text = request_id  # type: ignore[union-attr]
    tenant = header.find(f"{ENV}client/{ENV}tenant")  # the sample's is another town's
    tenant.text = TOWN  # type: ignore[union-attr]
    return etree.tostring(reply, encoding="UTF-8", xml_declaration=True)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    capture = CaptureServer(provider_reply).start()
    config = config_dir_for(tmp_path, {"juki": capture.port})
    opened = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config, dispatch_workers=0))
    try:
        yield opened
    finally:
        opened.close()
        capture.stop()


def test_an_inquiry_and_its_reply_are_in_the_trail_with_where_each_went(hub: Hub) -> None:
    asked = hub.ingest(INQUIRY, adapter="test", source_address="127.0.0.1")
    assert asked.reply is not None and asked.reply.envelope is not None, [
        f.code for f in asked.findings
    ]
    inquiry_id = etree.fromstring(INQUIRY).findtext(f"{ENV}Header/{ENV}messageId")
    reply_id = asked.reply.envelope.message_id
    with hub.store.sessions() as session:
        stored = {
            row.message_id: row.tenant
            for row in session.execute(select(StoredMessage.message_id, StoredMessage.tenant))
        }
    assert stored == {inquiry_id: TOWN, reply_id: TOWN}
    with hub.store.sessions.begin() as session:
        trail = resident_trail(
            session, tenant=TOWN, resident=ASKED_ABOUT, actor="cli:test", pseudonym_key=b"k"
        )
    assert {(m.message_id, m.kind, m.relation) for m in trail.messages} == {
        (inquiry_id, "inquiry", "subject"),
        (reply_id, "reply", "reply"),
    }
    assert {(p.message_id, p.destination, p.via) for p in trail.provisions} == {
        (inquiry_id, "juki", "inquiry"),  # the 宛名番号 and what else was asked, to the provider
        (reply_id, "tainou", "reply"),  # the resident's record, to the system that asked
    }
    with hub.store.sessions.begin() as session:  # the reply's own subject finds it too
        theirs = resident_trail(
            session, tenant=TOWN, resident=REPLY_SUBJECT, actor="cli:test", pseudonym_key=b"k"
        )
    assert [m.message_id for m in theirs.messages] == [reply_id]
    # the inquiry is not about them, but who got their record is still named
    assert [(p.destination, p.via) for p in theirs.provisions] == [("tainou", "reply")]
