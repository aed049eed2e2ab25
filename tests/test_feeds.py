"""PULL feeds over real HTTP: order, cursor continuity across a restart (and two server
processes on PostgreSQL), idempotent re-reading, entitlement and tenant isolation, the
feed consumer getting no push deliveries, the 全件 export, and retention → 410."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from bus.catalogue import NS_STANDARD
from bus.identity import hash_api_key, new_api_key
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.samplegen.values import TOWNS
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import Delivery
from bus.store.retention import purge
from tests.support.hub_server import HubServer, hub_server
from tests.support.receivers import SAMPLE_CONFIG_DIR, wait_for

pytestmark = pytest.mark.feed

FEED = "/api/v1/feeds/ResidentChangeNotice"
TAKEN, OTHER, NOT_SERVED = TOWNS[0].code, TOWNS[1].code, TOWNS[2].code
MOVE_OUT, MOVE_IN = "201", "101"  # tainou's route condition holds for 201 only


def notice(seed: int, tenant_index: int, reason: str) -> bytes:
    document = build_message(MessageSpec("ResidentChangeNotice", seed, town=TOWNS[tenant_index]))
    element = document.find(f".//{{{NS_STANDARD}}}changeReason")
    assert element is not None
    element.text = reason
    return serialize(document)


def feed_config(tmp: Path) -> tuple[Path, dict[str, str]]:
    """kotei reads ResidentChangeNotice as a feed (no push) for two towns only; every
    system used here holds an API key."""
    directory = tmp / "feed-config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    keys: dict[str, str] = {}
    for system in document["systems"]:
        if system["id"] in ("juki", "kotei", "tainou", "zeimu"):
            keys[system["id"]] = new_api_key(system["id"])
            system["credentials"] = {"api_key_hashes": [hash_api_key(keys[system["id"]])]}
        if system["id"] == "kotei":
            system["delivery"] = "feed"
            system["tenants"] = [TAKEN, OTHER]
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory, keys


def server_env(settings: Settings) -> dict[str, str]:
    if settings.is_sqlite:
        return {}
    return {
        "RENKEI_DATABASE_URL": settings.effective_database_url,
        "RENKEI_BROKER_URL": settings.broker_url,
    }


def get(server: HubServer, key: str, path: str = FEED, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{server.url}{path}", params=params, headers=headers, timeout=30)


def send(server: HubServer, key: str, raw: bytes) -> str:
    response = httpx.post(
        f"{server.url}/api/v1/messages/ResidentChangeNotice",
        content=raw,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/xml"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert "kotei" not in body["destinations"]  # a feed consumer gets no push delivery
    return str(body["message_id"])


def read_all(
    server: HubServer, key: str, tenant: str, since: str | None, limit: int
) -> tuple[list[str], str]:
    ids: list[str] = []
    cursor = since
    while True:
        params: dict[str, Any] = {"tenant": tenant, "limit": limit}
        if cursor:
            params["since"] = cursor
        page = get(server, key, **params)
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [entry["message_id"] for entry in body["entries"]]
        cursor = body["next_cursor"]
        if not body["more"]:
            return ids, str(cursor)


def purge_once_delivered(settings: Settings) -> int:
    """Once no delivery is pending, retention purges every message (the cut-off ten years
    ahead); how many it purged."""
    store = open_store(settings)
    try:

        def resolved() -> bool:
            with store.sessions() as session:
                query = select(func.count()).where(Delivery.state == "pending")
                return int(session.scalar(query) or 0) == 0

        wait_for(resolved)
        return purge(store.sessions, datetime.now(UTC) + timedelta(days=3650)).messages
    finally:
        store.close()


@pytest.fixture
def setup(
    tmp_path: Path, store_settings: Settings
) -> Iterator[tuple[Path, dict[str, str], Settings]]:
    config, keys = feed_config(tmp_path)
    yield config, keys, store_settings


def test_feed_order_cursor_entitlement_export_and_retention(
    tmp_path: Path, setup: tuple[Path, dict[str, str], Settings]
) -> None:
    config, keys, settings = setup
    env = server_env(settings)
    with hub_server(tmp_path, config_source=config, loopback=False, env=env) as server:
        sent = [
            send(server, keys["juki"], notice(i, 0, MOVE_OUT if i % 2 else MOVE_IN))
            for i in range(7)
        ]
        other = [send(server, keys["juki"], notice(100 + i, 1, MOVE_IN)) for i in range(2)]
        send(server, keys["juki"], notice(200, 2, MOVE_IN))

        # order, paging, the next cursor
        first = get(server, keys["kotei"], tenant=TAKEN, limit=3).json()
        assert [e["message_id"] for e in first["entries"]] == sent[:3] and first["more"]
        assert first["system"] == "kotei" and "PlatformMessage" in first["entries"][0]["body"]
        rest, end = read_all(server, keys["kotei"], TAKEN, first["next_cursor"], 2)
        assert rest == sent[3:]
        # reading again from an old cursor gives the same entries (idempotent reading)
        assert read_all(server, keys["kotei"], TAKEN, first["next_cursor"], 2)[0] == rest
        assert get(server, keys["kotei"], tenant=TAKEN, since=end).json()["entries"] == []

        # entitlement: tainou's route condition; tenant isolation; a town not served
        assert read_all(server, keys["tainou"], TAKEN, None, 50)[0] == sent[1::2]
        assert read_all(server, keys["kotei"], OTHER, None, 50)[0] == other
        crossed = get(server, keys["kotei"], tenant=OTHER, since=first["next_cursor"])
        assert crossed.status_code == 400 and crossed.json()["findings"][0]["code"] == "RK-FED001"
        refused = get(server, keys["kotei"], tenant=NOT_SERVED)
        assert refused.status_code == 403 and refused.json()["findings"][0]["code"] == "RK-FED002"
        not_granted = get(server, keys["juki"], tenant=TAKEN)  # juki never receives it
        assert not_granted.status_code == 403
        other_service = get(server, keys["kotei"], "/api/v1/feeds/LevyNotice", tenant=TAKEN)
        assert other_service.status_code == 403
        assert get(server, "rk_kotei_wrong", tenant=TAKEN).status_code == 401
        # system= names one of the caller's own systems; another one is RK-FED006 (not the
        # Header's RK-AUT002: a feed request has no Header)
        foreign = get(server, keys["kotei"], tenant=TAKEN, system="tainou")
        assert foreign.status_code == 403
        assert foreign.json()["findings"][0]["code"] == "RK-FED006"
        # a tenant code is six digits: one with more is refused, never cut to a served town's
        for bad in (TAKEN + "9", TAKEN[:5], "４１２０６６"):
            wrong = get(server, keys["kotei"], tenant=bad)
            assert wrong.status_code == 400, bad
            assert wrong.json()["findings"][0]["code"] == "RK-FED005"

        # 全件: streamed, then a 差分 reader continues from its cursor
        export = httpx.get(
            f"{server.url}{FEED}/export",
            params={"tenant": TAKEN},
            headers={"Authorization": f"Bearer {keys['kotei']}"},
            timeout=30,
        )
        lines = [json.loads(line) for line in export.text.splitlines()]
        assert [line["message_id"] for line in lines[:-1]] == sent
        assert lines[-1]["count"] == 7
        late = send(server, keys["juki"], notice(300, 0, MOVE_IN))
        assert read_all(server, keys["kotei"], TAKEN, lines[-1]["next_cursor"], 10)[0] == [late]

    # cursors survive a restart (and, on PostgreSQL, two server processes)
    workers = 1 if settings.is_sqlite else 2
    with hub_server(
        tmp_path, config_source=config, loopback=False, env=env, workers=workers
    ) as server:
        for _ in range(4):  # several requests: with two workers both processes answer
            assert read_all(server, keys["kotei"], TAKEN, first["next_cursor"], 2)[0] == [
                *rest,
                late,
            ]

        # retention purges what the cursor has not read yet: a clear 410
        hub_data = settings.model_copy(update={"data_dir": tmp_path / "hub-data"})
        assert purge_once_delivered(hub_data) >= 11
        gone = get(server, keys["kotei"], tenant=TAKEN, since=first["next_cursor"])
        assert gone.status_code == 410 and gone.json()["findings"][0]["code"] == "RK-FED003"
        fresh = get(server, keys["kotei"], tenant=TAKEN)
        assert fresh.status_code == 200 and fresh.json()["entries"] == []


def test_a_route_to_feed_consumers_only_is_accepted_and_corrections_follow(
    tmp_path: Path,
) -> None:
    """RegistrationNotice's one subscriber (kotei) reads it as a feed: the message is
    accepted with no push delivery, and a correction (relatesTo) is routed too."""
    from bus.hub import Hub
    from tests.support.hub_server import sample

    config, _ = feed_config(tmp_path)
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        original = sample("RegistrationNotice")
        first = hub.ingest(serialize(original), adapter="rest", source_address="127.0.0.1")
        assert first.ack is not None and first.ack.destinations == ()
        assert not first.findings or all(f.severity.value != "error" for f in first.findings)
        correction = sample("RegistrationNotice")
        header = correction[0]
        message_id = original.find(".//{urn:renkei:platform:envelope:1}messageId")
        assert message_id is not None
        relates = header.makeelement("{urn:renkei:platform:envelope:1}relatesTo")
        relates.text = message_id.text
        header.insert(1, relates)
        second = hub.ingest(serialize(correction), adapter="rest", source_address="127.0.0.1")
        assert second.ack is not None, second.findings
    finally:
        hub.close()


def test_a_purged_newest_message_leaves_its_key_unused_so_no_cursor_skips_the_next(
    tmp_path: Path, store_settings: Settings
) -> None:
    """The whole store's newest message purged: the next message gets a fresh key (SQLite
    AUTOINCREMENT, a PostgreSQL sequence), so a cursor that had read the purged one still
    sees the next."""
    from bus.feeds import Cursor, entitlement, read_feed
    from bus.hub import Hub

    config, _ = feed_config(tmp_path)
    hub = Hub.open(store_settings.model_copy(update={"config_dir": config}))
    service = "RegistrationNotice"  # kotei, a feed consumer, its one subscriber: no deliveries
    try:

        def ingest(seed: int) -> None:
            raw = serialize(build_message(MessageSpec(service, seed, town=TOWNS[0])))
            message = hub.ingest(raw, adapter="rest", source_address="127.0.0.1")
            assert message.ack is not None and not message.ack.duplicate, message.findings

        entitled = entitlement(hub.config.current().index, "kotei", TAKEN, service)
        ingest(1)
        page = read_feed(hub.store.sessions, entitled, Cursor.start(TAKEN, service), 10)
        (first,) = page.entries
        assert page.next_cursor.position == first.position

        purged = purge(hub.store.sessions, datetime.now(UTC) + timedelta(days=3650))
        assert purged.messages == 1  # the newest (and only) message of the whole store

        ingest(2)
        again = read_feed(hub.store.sessions, entitled, page.next_cursor, 10)
        (second,) = again.entries  # not skipped
        assert second.position > first.position  # never the purged message's key again
    finally:
        hub.close()


def test_a_chain_of_corrections_follows_its_original_into_a_conditional_feed(
    tmp_path: Path,
) -> None:
    """kotei reads 転出 (201) but not 改製 (107): a 取消 (107) of a 転出 is its, and so is a
    取消 of that 取消, as the Route stage sends a chain along; a 107 naming a 転出 of another
    sending system is not (the earlier message is looked up by the sender's own key)."""
    from bus.catalogue import NS_ENVELOPE
    from bus.feeds import Cursor, entitlement, read_feed
    from bus.hub import Hub
    from bus.store.models import StoredMessage

    config, keys = feed_config(tmp_path)
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    service = "ResidentChangeNotice"

    def send(seed: int, reason: str, relates_to: str | None = None) -> str:
        document = build_message(MessageSpec(service, seed, town=TOWNS[0]))
        element = document.find(f".//{{{NS_STANDARD}}}changeReason")
        assert element is not None
        element.text = reason
        header = document[0]
        if relates_to is not None:
            relates = header.makeelement(f"{{{NS_ENVELOPE}}}relatesTo")
            relates.text = relates_to
            header.insert(1, relates)
        message = hub.ingest(serialize(document), adapter="rest", api_key=keys["juki"])
        assert message.ack is not None, message.findings
        assert message.envelope is not None
        return message.envelope.message_id

    try:
        original = send(1, MOVE_OUT)
        first = send(2, "107", relates_to=original)
        second = send(3, "107", relates_to=first)
        foreign = send(4, MOVE_OUT)
        with hub.store.sessions.begin() as session:  # as if another system had sent it
            row = session.scalars(
                select(StoredMessage).where(StoredMessage.message_id == foreign)
            ).one()
            row.system = "zeimu"
        stranger = send(5, "107", relates_to=foreign)
        entitled = entitlement(hub.config.current().index, "kotei", TAKEN, service)
        page = read_feed(hub.store.sessions, entitled, Cursor.start(TAKEN, service), 50)
        read = [entry.message_id for entry in page.entries]
        assert stranger not in read
        assert read == [original, first, second, foreign], read
    finally:
        hub.close()
