"""項目制限 and 支援措置 end to end: a real hub, real HTTP destinations on 127.0.0.1 (a capture
server that keeps what each system received), pushed deliveries and an inquiry's reply."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree
from sqlalchemy import select

from bus.catalogue import NS_EXTENSION, NS_STANDARD
from bus.config.loader import ConfigError, load_config_dir
from bus.config.models import FieldLimits, System
from bus.hub import Hub
from bus.mapping.stage import outbound_body
from bus.protection.limits import limited_body
from bus.protection.suppression import WITHHELD_JA, console_record, withheld_body
from bus.settings import Settings
from bus.store.models import StoredMessage
from tests.support.capture_server import CaptureServer
from tests.support.receivers import config_dir_for, wait_for

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "messages"
# valid-full.xml as a 転居 (301): the sample routes send kotei only the change reasons its
# WSDL takes, and this test is about what kotei is entitled to see
NOTICE = (
    (SAMPLES / "ResidentChangeNotice" / "valid-full.xml")
    .read_bytes()
    .replace(
        b"<std:changeReason>107</std:changeReason>", b"<std:changeReason>301</std:changeReason>"
    )
)
INQUIRY = (SAMPLES / "AddresseeInquiry" / "valid-full.xml").read_bytes()
REPLY_TEMPLATE = (SAMPLES / "AddresseeInquiryReply" / "valid-full.xml").read_bytes()
NOTICE_MY_NUMBER = b"938166622636"
REPLY_MY_NUMBER = b"031862659697"
ENV = "{urn:renkei:platform:envelope:1}"
SYSTEMS = ("juki", "zeimu", "kokuho", "shuno", "kotei", "tainou")
KOTEI_ALLOW = ["localGovernmentCode", "addresseeNumber", "changeReason", "name", "address"]
FIELDS: dict[str, dict[str, Any]] = {
    "shuno": {"deny": ["address", "addressSupplement"]},  # and no 個人番号 (default)
    "kotei": {"allow": KOTEI_ALLOW},
    "tainou": {"my_number": False},
}


def items_in(body: bytes) -> set[str]:
    root = etree.fromstring(body)
    return {
        etree.QName(e).localname
        for e in root.iter(tag=etree.Element)
        if etree.QName(e).namespace in (NS_STANDARD, NS_EXTENSION)
    }


def provider_reply(path: str, request: bytes) -> bytes | None:
    """juki's answer to 宛名照会: two residents, the first under 支援措置."""
    if path != "/juki":
        return None
    asked = etree.fromstring(request)
    request_id = asked.findtext(f"{ENV}Header/{ENV}messageId")
    reply = etree.fromstring(REPLY_TEMPLATE)
    header = reply.find(f"{ENV}Header")
    assert header is not None and request_id is not None
    header.find(f"{ENV}messageId").text = str(uuid.uuid4())  # type: ignore[union-attr]
    header.find(f"{ENV}correlationId").text = request_id  # type: ignore[union-attr]
    # answered for the town that asked (the template's is another town's)
    tenant = asked.findtext(f"{ENV}Header/{ENV}client/{ENV}tenant")
    header.find(f"{ENV}client/{ENV}tenant").text = tenant  # type: ignore[union-attr]
    flags = reply.findall(f".//{{{NS_STANDARD}}}suppressionFlag")
    flags[0].text = "true"
    return etree.tostring(reply, encoding="UTF-8", xml_declaration=True)


def configure(tmp_path: Path, port: int) -> Path:
    directory = config_dir_for(
        tmp_path, dict.fromkeys(SYSTEMS, port), retry={"base_delay": "PT0.05S"}
    )
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        if system["id"] in FIELDS:
            system["fields"] = FIELDS[system["id"]]
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    return directory


@pytest.fixture
def hub_and_capture(
    tmp_path: Path, store_settings: Settings
) -> Iterator[tuple[Hub, CaptureServer]]:
    capture = CaptureServer(provider_reply).start()
    hub = Hub.open(
        store_settings.model_copy(update={"config_dir": configure(tmp_path, capture.port)})
    )
    pool = hub.workers(2)
    pool.start()
    try:
        yield hub, capture
    finally:
        pool.stop()
        hub.close()
        capture.stop()


def test_pushed_deliveries_carry_only_what_each_destination_is_entitled_to(
    hub_and_capture: tuple[Hub, CaptureServer],
) -> None:
    hub, capture = hub_and_capture
    message = hub.ingest(NOTICE, adapter="test", source_address="127.0.0.1")
    assert message.ack is not None, [f.message_en for f in message.findings]
    wait_for(lambda: all(capture.received(f"/{s}") for s in ("zeimu", "shuno", "kotei")), 60)
    (zeimu,) = capture.received("/zeimu")
    (shuno,) = capture.received("/shuno")
    (kotei,) = capture.received("/kotei")
    assert NOTICE_MY_NUMBER in zeimu and "address" in items_in(zeimu)  # entitled (番号法)
    assert NOTICE_MY_NUMBER not in shuno and NOTICE_MY_NUMBER not in kotei
    assert {"myNumber", "address", "addressSupplement"}.isdisjoint(items_in(shuno))
    assert {"addresseeNumber", "name", "addressCode"} <= items_in(shuno)
    assert items_in(kotei) == set(KOTEI_ALLOW)
    # the store keeps the message as sent: limits apply on the way out only
    with hub.store.sessions() as session:
        stored = session.scalars(select(StoredMessage.body)).one()
    assert NOTICE_MY_NUMBER in stored


def test_inquiry_reply_withholds_my_number_and_protected_addresses(
    hub_and_capture: tuple[Hub, CaptureServer],
) -> None:
    hub, capture = hub_and_capture
    message = hub.ingest(INQUIRY, adapter="test", source_address="127.0.0.1")
    assert message.reply is not None and message.reply.document is not None, [
        f.message_en for f in message.findings
    ]
    (asked,) = capture.received("/juki")
    assert b"616517286231" in asked  # the provider (entitled) got the request as sent
    results = message.reply.document.findall(".//{urn:renkei:platform:service:1}Result")
    protected, other = ({etree.QName(e).localname for e in r} for r in results)
    assert {"postalCode", "address", "addressSupplement", "myNumber"}.isdisjoint(protected)
    assert {"name", "suppressionFlag"} <= protected
    assert {"postalCode", "address", "addressSupplement"} <= other and "myNumber" not in other
    assert REPLY_MY_NUMBER not in message.reply.raw
    assert message.reply.envelope is not None
    with hub.store.sessions() as session:  # what is stored is what the caller got
        stored = session.scalars(
            select(StoredMessage.body).where(
                StoredMessage.message_id == message.reply.envelope.message_id
            )
        ).one()
    assert REPLY_MY_NUMBER not in stored and items_in(stored) == items_in(message.reply.raw)


def test_the_provider_asking_itself_sees_the_protected_address() -> None:
    from bus.pipeline import Message
    from bus.protection.replies import protect_reply

    juki = System(id="juki", name="住民記録", fields=FieldLimits(my_number=True))
    document = etree.fromstring(provider_reply("/juki", INQUIRY) or b"")
    reply = Message(raw=b"", adapter="test", document=document)
    protect_reply(reply, juki, juki)
    assert reply.raw == b""  # nothing removed, nothing re-serialised
    assert len(document.findall(f".//{{{NS_STANDARD}}}address")) == 2


def test_feeds_get_the_same_filter_through_outbound_body() -> None:
    houmu = System(id="houmu", name="法務局")  # no fields: not entitled to 個人番号
    assert NOTICE_MY_NUMBER not in outbound_body(houmu, "ResidentChangeNotice", NOTICE)
    assert limited_body(houmu, NOTICE) == outbound_body(houmu, "ResidentChangeNotice", NOTICE)
    entitled = System(id="zeimu", name="税務", fields=FieldLimits(my_number=True))
    assert limited_body(entitled, NOTICE) is NOTICE  # nothing withheld: the same bytes


def test_console_body_hides_a_protected_address() -> None:
    protected = NOTICE  # valid-full.xml: 抑止フラグ true
    shown = withheld_body(protected)
    assert b"<std:suppressionFlag>true" in protected and b"<std:address>" in protected
    assert "address" not in items_in(shown) and "name" in items_in(shown)
    unprotected = protected.replace(b"suppressionFlag>true<", b"suppressionFlag>false<")
    assert withheld_body(unprotected) is unprotected


def test_console_helper_hides_a_protected_address() -> None:
    record = {"name": "山田　太郎", "address": "佐賀県武雄市", "suppressionFlag": "true"}
    assert console_record(record)["address"] == WITHHELD_JA
    assert console_record({**record, "suppressionFlag": "false"})["address"] == "佐賀県武雄市"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"allow": ["noSuchItem"]}, "unknown catalogue item 'noSuchItem'"),
        ({"allow": ["myNumber"]}, "'myNumber' is 個人番号"),
        ({"allow": ["name"], "deny": ["address"]}, "either allow or deny"),
    ],
)
def test_field_limits_are_checked_at_load_with_file_and_line(
    tmp_path: Path, fields: dict[str, Any], expected: str
) -> None:
    directory = configure(tmp_path, 1)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["systems"][-1]["fields"] = fields
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config_dir(directory)
    (problem,) = [p for p in raised.value.problems if expected in p]
    assert problem.startswith("systems.yaml:") and int(problem.split(":")[1]) > 1
