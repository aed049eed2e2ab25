"""No personal data in clear text in logs or audit rows (DESIGN §7).

Every valid sample message (samples/messages/*/valid-*.xml) runs through a real hub with
recording receivers playing every connected system (notifications delivered, inquiries
answered), with renkei's JSON logging at DEBUG for the hub's own loggers. Then the rendered
log lines, every captured log record and every audit row are searched for each sample
resident's name, address and 個人番号 taken from every sample file, valid or not.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select

from bus.catalogue import load_catalogue
from bus.hub import Hub
from bus.observability.logs import configure_logging
from bus.settings import Settings
from bus.store.models import AuditRecord, Delivery, DeliveryState
from tests.support.hub_server import sample, serialize
from tests.support.receivers import Receiver, config_dir_for, receiver_factory, wait_for

receivers = pytest.fixture(receiver_factory, name="receivers")
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "messages"
SYSTEMS = ("juki", "zeimu", "shuno", "tainou", "kokuho", "kotei", "houmu")
NAME_ADDRESS_MY_NUMBER = frozenset(
    {
        "name",
        "nameKana",
        "commonName",
        "headOfHouseholdName",
        "address",
        "addressSupplement",
        "previousAddress",
        "plannedDestinationAddress",
        "rightHolderName",
        "rightHolderNameKana",
        "rightHolderAddress",
        "obligorName",
        "obligorAddress",
        "myNumber",
    }
)


def resident_values() -> set[str]:
    """Every sample resident's name, address and 個人番号, from every sample file."""
    tags = {
        item.tag for item in load_catalogue().catalogue_items() if item.id in NAME_ADDRESS_MY_NUMBER
    }
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    values = set()
    for path in SAMPLES.rglob("*.xml"):
        root = etree.parse(str(path), parser).getroot()
        if root is None:
            continue
        for element in root.iter(*tags):
            text = (element.text or "").strip()
            if len(text) >= 4:  # shorter strings occur everywhere and prove nothing
                values.add(text)
    return values


def pending(hub: Hub) -> int:
    with hub.store.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.state == DeliveryState.PENDING.value)
            )
            or 0
        )


def test_sample_traffic_leaves_no_personal_data_in_logs_or_audit(
    tmp_path: Path,
    receivers: Callable[[str], Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = resident_values()
    assert len(secrets) > 40 and any(s.isdigit() and len(s) == 12 for s in secrets)
    started = {name: receivers(name).start() for name in SYSTEMS}
    config = config_dir_for(
        tmp_path, {n: r.port for n, r in started.items()}, retry={"base_delay": "PT0.05S"}
    )
    rendered = io.StringIO()
    configure_logging("INFO", stream=rendered)
    for name in ("bus", "adapters", "renkei"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    pool = hub.workers(2)
    pool.start()
    try:
        outcomes = []
        for path in sorted(SAMPLES.glob("*/valid-*.xml")):
            message = hub.ingest(
                serialize(sample(path.parent.name, path.name)),
                adapter="test",
                source_address="127.0.0.1",
            )
            outcomes.append((path.name, message.ack is not None, message.reply is not None))
        wait_for(lambda: pending(hub) == 0, timeout=120)
        with hub.store.sessions() as session:
            audit = [
                json.dumps([r.tenant, r.event, r.message_id, r.actor, r.detail], ensure_ascii=False)
                for r in session.scalars(select(AuditRecord))
            ]
    finally:
        pool.stop()
        hub.close()
        for name in ("bus", "adapters", "renkei"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        configure_logging("INFO")
    assert sum(acked for _, acked, _ in outcomes) >= 10  # real traffic: stored and delivered
    assert any(replied for _, _, replied in outcomes)  # and inquiries answered
    logs = rendered.getvalue()
    records = "\n".join(
        f"{r.getMessage()} {r.__dict__.get('exc_text') or ''}" for r in caplog.records
    )
    assert logs and records and len(audit) >= len(outcomes)
    for value in sorted(secrets):
        assert value not in logs, f"rendered log holds {value!r}"
        assert value not in records, f"a log record holds {value!r}"
        for row in audit:
            assert value not in row, f"audit row holds {value!r}: {row}"
