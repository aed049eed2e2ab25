"""Data for the hub benchmark: a configuration fanning 住民異動通知 out to three receivers,
a corpus of valid messages, a pre-filled store, and throw-away PostgreSQL databases."""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bus.pipeline import Delivery
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.samplegen.values import TOWNS
from bus.store.audit import audited_tenants, verify_chain
from bus.store.ingest import Incoming, store_incoming
from bus.store.models import Delivery as DeliveryRow
from tests.support.postgres import scratch_database

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = ROOT / "samples" / "config"
SERVICE = "ResidentChangeNotice"
SUBSCRIBERS = ("zeimu", "kokuho", "shuno")  # the three local HTTP subscribers
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
_MESSAGE_ID = re.compile(rb"<env:messageId>[^<]+</env:messageId>")


def config_dir(directory: Path, ports: dict[str, int]) -> Path:
    """samples/config with 住民異動通知 routed to exactly the three subscribers, each at
    ``127.0.0.1:<port>/<system>``; no retries to speak of are needed."""
    target = directory / "config"
    shutil.copytree(SAMPLE_CONFIG, target, dirs_exist_ok=True)
    systems_path = target / "systems.yaml"
    systems = yaml.safe_load(systems_path.read_text(encoding="utf-8"))
    for system in systems["systems"]:
        if system["id"] in ports:
            url = f"http://127.0.0.1:{ports[system['id']]}/{system['id']}"
            system["endpoint"] = {"transport": "http", "url": url, "timeout_seconds": 10}
    systems_path.write_text(yaml.safe_dump(systems, allow_unicode=True), encoding="utf-8")
    routes_path = target / "routes.yaml"
    routes = yaml.safe_load(routes_path.read_text(encoding="utf-8"))
    for route in routes["routes"]:
        if route["service"] == SERVICE:
            route["subscribers"] = [{"system": name} for name in SUBSCRIBERS]
    routes_path.write_text(yaml.safe_dump(routes, allow_unicode=True), encoding="utf-8")
    return target


def corpus(count: int, distinct: int = 1000, seed: int = 0) -> list[bytes]:
    """``count`` valid 住民異動通知 across the six pilot towns, each with its own messageId.
    ``distinct`` documents are generated (2 ms each); beyond that they repeat with new ids,
    so a resident (subject) recurs every ``distinct`` messages, as in real traffic."""
    base = [
        serialize(build_message(MessageSpec(SERVICE, seed + i, TOWNS[i % len(TOWNS)])))
        for i in range(min(count, distinct))
    ]
    return [renumber(base[i % len(base)]) for i in range(count)]


def renumber(body: bytes) -> bytes:
    """The same message under a new messageId."""
    return _MESSAGE_ID.sub(f"<env:messageId>{uuid.uuid4()}</env:messageId>".encode(), body, 1)


def header_value(body: bytes, name: str) -> str:
    found = re.search(rb"<env:" + name.encode() + rb">([^<]+)</env:", body)
    assert found is not None, name
    return found.group(1).decode()


def incoming(body: bytes, now: datetime, destinations: Sequence[str] = SUBSCRIBERS) -> Incoming:
    """What the Store stage writes for ``body`` (fields read from its Header), routed to
    ``destinations``."""
    tenant, message_id, subject = (
        header_value(body, n) for n in ("tenant", "messageId", "subject")
    )
    return Incoming(
        tenant=tenant,
        system="juki",
        message_id=message_id,
        service=SERVICE,
        kind="notification",
        subject=subject,
        correlation_id=None,
        relates_to=None,
        body=body,
        digest=hashlib.sha256(body).hexdigest(),
        received_at=now,
        expires_at=now + timedelta(days=365),
        deliveries=tuple(Delivery(message_id, d, tenant, subject) for d in destinations),
    )


def prefill(sessions: sessionmaker[Session], bodies: Sequence[bytes], group: int = 250) -> None:
    """Store ``bodies`` as the Store stage does (message, key, deliveries, sequences, audit),
    ``group`` ingests per transaction."""
    now = datetime.now(UTC)
    for start in range(0, len(bodies), group):
        with sessions.begin() as session:
            for body in bodies[start : start + group]:
                store_incoming(session, incoming(body, now), now=now)


def delivered_count(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state))
        return {state: int(count) for state, count in rows}


def chains_verify(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return all(verify_chain(session, tenant).ok for tenant in audited_tenants(session))


def postgres_database(tag: str) -> AbstractContextManager[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    return scratch_database(f"renkei_bench_{tag}")
