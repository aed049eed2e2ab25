"""Request-reply with a provider that speaks its own dialect: the hub translates the
滞納情報照会 into 滞納管理's 滞納照会 (mappings/tainou.yaml outbound), the tainou REST sample
system answers 滞納照会回答 from its arrears table, and the hub translates that back (the
DelinquencyInquiryReply inbound section) before validating it."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.hub import Hub
from bus.settings import Settings
from samples.systems import launcher
from tests.conftest import SAMPLE_CONFIG_DIR
from tests.support.receivers import free_port

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "messages"
STD, ENV = f"{{{NS_STANDARD}}}", f"{{{NS_ENVELOPE}}}"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Hub, Path]]:
    """A hub whose tainou endpoint is the tainou sample system on a free port."""
    config = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, config)
    systems = config / "systems.yaml"
    url = f"http://127.0.0.1:{free_port()}/tainou"
    text = re.sub(r"http://127\.0\.0\.1:\d+/tainou", url, systems.read_text(encoding="utf-8"))
    systems.write_text(text, encoding="utf-8")
    samples = launcher.start({"tainou": url}, tmp_path / "samples")
    opened = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        yield opened, tmp_path / "samples"
    finally:
        opened.close()
        samples.stop()


def inquiry(tenant: str, addressee: str) -> tuple[bytes, str]:
    document = etree.parse(str(SAMPLES / "DelinquencyInquiry" / "valid-full.xml")).getroot()
    message_id = str(uuid.uuid4())
    values = {
        f"{ENV}Header/{ENV}messageId": message_id,
        f"{ENV}Header/{ENV}client/{ENV}tenant": tenant,
        f"{ENV}Header/{ENV}subject": addressee,
        f".//{STD}localGovernmentCode": tenant,
        f".//{STD}addresseeNumber": addressee,
        f".//{STD}taxItem": "01",  # 個人住民税: 滞納管理's JUMIN
        f".//{STD}fiscalYear": "2025",
    }
    for path, value in values.items():
        element = document.find(path)
        assert element is not None, path
        element.text = value
    corporate = document.find(f".//{STD}corporateNumber")
    assert corporate is not None
    corporate.getparent().remove(corporate)  # type: ignore[union-attr]
    return etree.tostring(document, encoding="UTF-8", xml_declaration=True), message_id


def test_an_inquiry_to_a_dialect_provider_is_translated_both_ways(
    hub: tuple[Hub, Path],
) -> None:
    running, samples = hub
    raw, message_id = inquiry("412066", "100000000000008")
    message = running.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.ack is not None, [(f.code, f.detail) for f in message.findings]
    reply = message.reply
    assert reply is not None and reply.service == "DelinquencyInquiryReply"
    assert reply.envelope is not None and reply.envelope.correlation_id == message_id
    assert reply.document is not None
    values = {etree.QName(e).localname: e.text for e in reply.document.iter(f"{STD}*", "{*}*")}
    # 滞納管理 answered in its dialect (JUMIN, 令和7年6月30日): the hub gave the caller codes
    # and ISO dates of the standard.
    assert values["localGovernmentCode"] == "412066"
    assert values["taxItem"] == "01" and values["dueDate"] in ("2025-06-30", "2025-08-31")
    assert values["delinquentAmount"] == "120000"
    # What 滞納管理 received was its own 滞納照会 (tax item JUMIN), not the standard element.
    received = launcher_log(samples)
    assert received["service"] == "DelinquencyInquiry" and received["fields"]["税目"] == "JUMIN"


def launcher_log(samples: Path) -> dict[str, object]:
    from samples.systems.received import ReceivedLog

    rows = ReceivedLog(samples / "tainou-received.db", "tainou").rows()
    assert len(rows) == 1
    return rows[0]
