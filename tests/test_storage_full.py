"""A full store (SQLite's SQLITE_FULL, PostgreSQL's disk_full) over real HTTP: each POST is
answered 503 with Retry-After and RK-STO007 (a SOAP Server fault), the log says so once (and
once when it is writable again), /readyz is not ready meanwhile, and the hub recovers by itself.

The store is filled honestly and portably with SQLite's own limit, ``PRAGMA max_page_count``,
set by the test on the hub's real engine through SQLAlchemy's public pool events: once the
database may not grow, SQLite itself answers "database or disk is full"."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import errors as pg_errors
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bus.catalogue import NS_ENVELOPE
from bus.hub import Hub
from bus.pipeline import Message
from bus.security.secret_box import KEY_FILE, SecretBox
from bus.security.wsse import set_soap_secret
from bus.settings import Settings
from bus.store.models import StoredMessage
from bus.store.write_health import is_storage_full, write_health
from bus.store.writers import writer_turn
from bus.webapp import create_app
from tests.support.hub_server import sample, serialize, soap_envelope
from tests.support.page_limit import PageLimit
from tests.support.soap import fault_codes
from tests.support.towns import soap_with_token

SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
XML = {"Content-Type": "application/xml"}
CODE = "RK-STO007"


@pytest.fixture
def hub(local_hub: Hub) -> Hub:
    return local_hub  # this module's tests all work on the one in-process hub


def _message() -> tuple[str, bytes]:
    document = sample("LevyNotice")
    message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""
    return message_id, serialize(document)


async def _post(client: httpx.AsyncClient, soap: bool) -> tuple[str, httpx.Response]:
    message_id, body = _message()
    if soap:
        document = sample("LevyNotice")
        message_id = document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""
        return message_id, await client.post(
            "/soap/LevyNotice", content=soap_envelope(document), headers=SOAP
        )
    return message_id, await client.post("/api/v1/messages/LevyNotice", content=body, headers=XML)


def _run(hub: Hub, scenario: Any) -> Any:
    app = create_app()
    app.state.hub = hub

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await scenario(client)

    return asyncio.run(go())


def _stored_ids(hub: Hub) -> set[str]:
    with hub.store.sessions() as session:
        return set(session.scalars(select(StoredMessage.message_id)))


def _is_refusal(response: httpx.Response) -> bool:
    return response.status_code == 503


def test_full_store_is_503_with_one_log_line_and_not_ready_until_it_recovers(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    limit = PageLimit(hub)
    acked: set[str] = set()
    refused: set[str] = set()
    try:

        async def fill(client: httpx.AsyncClient) -> None:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            limit.freeze()
            for attempt in range(200):  # the free pages the database has fill first
                message_id, response = await _post(client, soap=attempt % 2 == 0)
                if _is_refusal(response):
                    refused.add(message_id)
                    return
                assert response.status_code in (200, 202), response.text
                acked.add(message_id)
            raise AssertionError("the store never filled")

        caplog.set_level(logging.INFO)
        _run(hub, fill)

        async def while_full(client: httpx.AsyncClient) -> dict[str, Any]:
            answers: dict[str, Any] = {}
            message_id, rest = await _post(client, soap=False)
            refused.add(message_id)
            answers["rest"] = rest
            message_id, soap = await _post(client, soap=True)
            refused.add(message_id)
            answers["soap"] = soap
            # several at once: the batch lane stores them together, and fails together
            together = await asyncio.gather(*(_post(client, soap=i % 2 == 0) for i in range(12)))
            refused.update(message_id for message_id, _ in together)
            answers["together"] = [response for _, response in together]
            answers["ready"] = await client.get("/readyz")
            answers["ready_again"] = await client.get("/readyz")
            return answers

        answers = _run(hub, while_full)
        rest = answers["rest"]
        assert rest.status_code == 503, rest.text
        assert rest.headers["content-type"].startswith("application/problem+json")
        assert int(rest.headers["retry-after"]) > 0
        assert rest.json()["findings"][0]["code"] == CODE
        soap = answers["soap"]
        assert soap.status_code == 503, soap.text
        assert int(soap.headers["retry-after"]) > 0
        assert fault_codes(soap) == ("soap:Server", [CODE])
        for response in answers["together"]:
            assert response.status_code == 503, response.text
            assert "retry-after" in response.headers
        ready = answers["ready"]
        assert ready.status_code == 503, ready.text
        database = ready.json()["checks"]["database"]
        assert database["ok"] is False
        assert database["finding"]["code"] == "RK-OPS007"
        assert answers["ready_again"].status_code == 503

        # one warning, no traceback, however many requests were refused
        full = [r for r in caplog.records if "RK-OPS007" in r.getMessage()]
        assert len(full) == 1, [r.getMessage() for r in full]
        assert full[0].levelno == logging.WARNING
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not [r for r in caplog.records if "RK-API003" in r.getMessage()]

        # nothing refused is stored, nothing acknowledged is lost
        assert _stored_ids(hub) >= acked
        assert not _stored_ids(hub) & refused

        limit.lift()  # space is freed: no traffic needed for /readyz to see it

        async def after(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
            # no message arrives (a load balancer stopped sending): /readyz's own probe sees
            # the room, at most once per PROBE_INTERVAL
            for _ in range(int(5 / 0.1)):
                ready = await client.get("/readyz")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            message_id, response = await _post(client, soap=False)
            acked.add(message_id)
            message_id, soap_response = await _post(client, soap=True)
            acked.add(message_id)
            return ready, response, soap_response

        ready, response, soap_response = _run(hub, after)
        assert ready.status_code == 200, ready.text
        assert response.status_code == 202, response.text
        assert soap_response.status_code == 200, soap_response.text
        again = [r for r in caplog.records if "writable again" in r.getMessage()]
        assert len(again) == 1
        assert _stored_ids(hub) >= acked
        assert not _stored_ids(hub) & refused
        assert hub.rejections.flush(10)  # the refusals' audit records are written once it can
    finally:
        limit.remove()


def test_a_success_clears_the_state_without_readiness(hub: Hub) -> None:
    limit = PageLimit(hub)
    try:

        async def scenario(client: httpx.AsyncClient) -> list[int]:
            limit.freeze()
            statuses = []
            for _ in range(200):
                _, response = await _post(client, soap=False)
                statuses.append(response.status_code)
                if response.status_code == 503:
                    break
            limit.lift()
            _, response = await _post(client, soap=False)
            statuses.append(response.status_code)
            return statuses

        statuses = _run(hub, scenario)
        assert statuses[-2:] == [503, 202]
        assert not write_health(hub.store.engine).failing
    finally:
        limit.remove()


def test_which_errors_mean_a_full_store() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    assert is_storage_full(OperationalError("INSERT", {}, full))
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    assert not is_storage_full(OperationalError("INSERT", {}, busy))
    write = sqlite3.OperationalError("disk I/O error")
    write.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[attr-defined]
    assert is_storage_full(OperationalError("INSERT", {}, write))
    read = sqlite3.OperationalError("disk I/O error")
    read.sqlite_errorcode = sqlite3.SQLITE_IOERR_READ  # type: ignore[attr-defined]
    assert not is_storage_full(OperationalError("SELECT", {}, read))
    assert is_storage_full(OperationalError("INSERT", {}, pg_errors.DiskFull("no space")))
    crowded = pg_errors.TooManyConnections("too many clients")  # class 53 too, not a full disk
    assert not is_storage_full(OperationalError("INSERT", {}, crowded))
    unique = pg_errors.UniqueViolation("duplicate")
    assert not is_storage_full(OperationalError("INSERT", {}, unique))
    assert not is_storage_full(RuntimeError("database or disk is full"))


def test_a_real_sqlite_full_is_recognised(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "tiny.db")
    connection.execute("CREATE TABLE t (x BLOB)")
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as caught:
        connection.execute("INSERT INTO t VALUES (zeroblob(100000))")
    connection.close()
    assert is_storage_full(OperationalError("INSERT", {}, caught.value))


def test_readiness_probe_is_a_real_write(hub: Hub) -> None:
    """The probe /readyz makes while the store is failing notices a store that cannot grow,
    leaves nothing behind, and recovers once it can."""
    health = write_health(hub.store.engine)
    limit = PageLimit(hub)
    try:
        health.failed(OperationalError("INSERT", {}, sqlite3.OperationalError("disk is full")))
        limit.freeze()
        assert not health.probe(hub.store.sessions, force=True)
        assert health.failing
        limit.lift()
        assert health.probe(hub.store.sessions, force=True)
        assert not health.failing
    finally:
        limit.remove()
    with hub.store.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT count(*) FROM destination_states").scalar_one()
    assert rows == 0


def test_unique_message_ids() -> None:  # the helper really varies the key
    assert _message()[0] != _message()[0]
    assert uuid.UUID(_message()[0])


def test_a_batch_that_finds_the_store_full_refuses_every_message(hub: Hub) -> None:
    """Several messages the batch lane stores in one transaction: each caller gets RK-STO007,
    none an acknowledgement, none is stored."""
    limit = PageLimit(hub)
    try:
        limit.freeze()
        filler = [_message()[1] for _ in range(200)]
        for raw in filler:  # use up the free pages the database has
            done = hub.submit(_inbound(raw)).result(30)
            if done.rejected:
                break
        ids, futures = [], []
        with writer_turn(hub.store.sessions):  # the lane waits: the rest queue into one batch
            for _ in range(8):
                message_id, raw = _message()
                ids.append(message_id)
                futures.append(hub.submit(_inbound(raw)))
            time.sleep(0.2)
        results = [future.result(30) for future in futures]
        assert all(r.ack is None for r in results)
        assert all([f.code for f in r.findings] == [CODE] for r in results)
        assert not _stored_ids(hub) & set(ids)
    finally:
        limit.remove()


def _inbound(raw: bytes) -> Message:
    return Message(
        raw=raw, adapter="rest", source_address="127.0.0.1", endpoint_service="LevyNotice"
    )


def test_a_key_that_does_not_open_the_stored_secret_is_a_coded_server_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The WS-Security secret was sealed under another key than the running hub's: the caller
    gets a Server fault (503, Retry-After) that only says the hub cannot verify credentials
    now; the log names the cause (RK-OPS005) once."""
    settings = Settings(data_dir=tmp_path / "data", dispatch_workers=0)
    first = Hub.open(settings)
    try:
        username, password = set_soap_secret(
            first.store.sessions, SecretBox.from_settings(settings), "zeimu"
        )
    finally:
        first.close()
    key_file = settings.data_dir / KEY_FILE
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())  # the wrong key
    opened = Hub.open(settings)
    caplog.set_level(logging.INFO)
    try:

        async def post(client: httpx.AsyncClient) -> list[httpx.Response]:
            body = [soap_with_token(sample("LevyNotice"), username, password) for _ in range(3)]
            return [
                await client.post("/soap/LevyNotice", content=raw, headers=SOAP) for raw in body
            ]

        for response in _run(opened, post):
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
            assert fault_codes(response) == ("soap:Server", ["RK-AUT014"])
            assert "secrets.key" not in response.text and "RK-OPS005" not in response.text
        cause = [r for r in caplog.records if "RK-OPS005" in r.getMessage()]
        assert len(cause) == 1 and cause[0].levelno == logging.WARNING
        assert not [r for r in caplog.records if "RK-API003" in r.getMessage()]
    finally:
        opened.close()
