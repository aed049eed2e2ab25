"""A PULL feed polled while the Message Store cannot be reached: the poller is told to come
back later (503 RK-STO008, ``Retry-After``), never that the server broke (RK-API003 with a
traceback in the log), and a 全件 export that fails part-way never looks complete.

In-process on a real SQLite store whose data directory goes away, and a real ``renkei serve``
on a scratch PostgreSQL database that refuses connections."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

import adapters.rest.feeds as feed_routes
from bus.hub import Hub
from bus.webapp import create_app
from tests.support.hub_server import hub_server, sample, serialize
from tests.test_qa_rest_client import _code, _send
from tests.test_qa_scaleout_services import _log_events
from tests.test_qa_storeoutage_services import database_outage, post_rest

FEED = "/api/v1/feeds/ResidentChangeNotice?tenant=414247&system=zeimu"
EXPORT = "/api/v1/feeds/ResidentChangeNotice/export?tenant=414247&system=zeimu"


def _store(hub: Hub, count: int) -> None:
    for _ in range(count):
        sent = _send(
            hub,
            "POST",
            "/api/v1/messages/ResidentChangeNotice",
            content=serialize(sample("ResidentChangeNotice")),
            headers={"Content-Type": "application/xml"},
        )
        assert sent.status_code == 202, sent.text


@contextmanager
def _store_gone(hub: Hub) -> Iterator[None]:
    """The SQLite file cannot be opened (its data directory moved away) until the block ends."""
    data_dir = hub.settings.data_dir
    moved = data_dir.with_name("data-away")
    hub.store.engine.dispose()  # new connections must open the (now missing) file
    data_dir.rename(moved)
    try:
        yield
    finally:
        moved.rename(data_dir)


def _assert_retry_later(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert _code(answer) == "RK-STO008"
    assert answer.headers["retry-after"].isdigit()


def test_a_feed_read_while_the_store_cannot_be_reached_is_503_retry_later(
    local_hub: Hub,
) -> None:
    _store(local_hub, 1)
    with _store_gone(local_hub):
        answer = _send(local_hub, "GET", FEED)
    _assert_retry_later(answer)
    again = _send(local_hub, "GET", FEED)
    assert again.status_code == 200 and len(again.json()["entries"]) == 1


def test_an_export_while_the_store_cannot_be_reached_is_503_before_any_line(
    local_hub: Hub,
) -> None:
    """The horizon and the first page were read only once the 200 had been sent: the
    failure escaped the streaming response (a traceback, a connection cut)."""
    _store(local_hub, 1)
    with _store_gone(local_hub):
        answer = _send(local_hub, "GET", EXPORT)
    _assert_retry_later(answer)


def _export_raw(hub: Hub, on_first_line: Callable[[], None]) -> tuple[int, list[dict[str, Any]]]:
    """The export through the ASGI interface, as a server drives it; ``on_first_line`` runs
    once the first line has been sent (and before the next page is read)."""
    app = create_app()
    app.state.hub = hub
    path, query = EXPORT.split("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"hub")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }
    status, body, requested = 0, bytearray(), False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if requested:  # the client stays connected
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        nonlocal status
        if event["type"] == "http.response.start":
            status = event["status"]
        elif event["type"] == "http.response.body":
            first = not body
            body.extend(event.get("body", b""))
            if first and body:
                on_first_line()

    asyncio.run(app(scope, receive, send))
    return status, [json.loads(line) for line in body.decode().splitlines()]


def test_an_export_cut_short_by_the_store_ends_with_a_coded_error_and_no_cursor(
    local_hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store going away after the first page escaped the stream as an exception (a
    traceback in the log, the connection cut). Now the last line is the coded error and no
    ``next_cursor`` is given: a consumer cannot take the part it got for the whole."""
    monkeypatch.setattr(feed_routes, "EXPORT_PAGE", 1)
    _store(local_hub, 3)
    complete_status, complete = _export_raw(local_hub, lambda: None)
    assert complete_status == 200 and complete[-1]["count"] == 3

    moved = local_hub.settings.data_dir.with_name("data-away")

    def outage() -> None:
        local_hub.store.engine.dispose()
        local_hub.settings.data_dir.rename(moved)

    try:
        status, lines = _export_raw(local_hub, outage)
    finally:
        moved.rename(local_hub.settings.data_dir)
    assert status == 200
    assert "message_id" in lines[0]
    assert "count" not in lines[-1] and "next_cursor" not in lines[-1]
    finding = lines[-1]["error"]
    assert finding["code"] == "RK-STO008"
    assert finding["message_ja"] and finding["message_en"]
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


@pytest.mark.services
@pytest.mark.postgres
def test_feeds_during_a_database_outage_tell_the_poller_to_come_back_logged_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """A real ``renkei serve`` on PostgreSQL: each feed read and export during the outage is
    503 RK-STO008 with ``Retry-After``; the outage is one RK-OPS001 warning, no traceback."""
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url}
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, serve_options=(), env=env, stderr=stderr) as hub,
        httpx.Client(timeout=30) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        with database_outage(postgres_url):
            time.sleep(1.5)  # past the configuration's 1 s poll
            refused = [client.get(hub.url + path) for path in (FEED, EXPORT, FEED, EXPORT)]
        for answer in refused:
            _assert_retry_later(answer)
        read = client.get(hub.url + FEED)
        assert read.status_code == 200 and len(read.json()["entries"]) == 1
        exported = client.get(hub.url + EXPORT).text.splitlines()
        assert json.loads(exported[-1])["count"] == 1
    events = _log_events(log)
    told = [str(e.get("event")) for e in events]
    assert sum(e.startswith("RK-OPS001 the message store cannot be reached") for e in told) == 1
    assert not [e for e in events if "Traceback" in str(e.get("event")) or "exception" in e]


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.postgres
def test_a_feed_read_behind_a_table_locked_by_another_session_is_503_retry_later(
    postgres_url: str, tmp_path: Path
) -> None:
    """The horizon's ``LOCK TABLE messages IN SHARE MODE`` waits up to its 10 s lock timeout
    behind a session holding an exclusive lock (psql's ``LOCK TABLE``), then the poller is
    told to come back later; the log names the lock (RK-OPS016), once."""
    log = tmp_path / "serve.log"
    env = {"RENKEI_DATABASE_URL": postgres_url}
    holder = create_engine(postgres_url)
    with (
        log.open("wb") as stderr,
        hub_server(tmp_path, serve_options=(), env=env, stderr=stderr) as hub,
        httpx.Client(timeout=30) as client,
    ):
        assert post_rest(client, hub).status_code == 202
        with holder.connect() as locking:
            locking.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            answer = client.get(hub.url + FEED)
            locking.rollback()
        _assert_retry_later(answer)
        assert client.get(hub.url + FEED).status_code == 200
    holder.dispose()
    told = [str(e.get("event")) for e in _log_events(log)]
    assert sum(e.startswith("RK-OPS016 the message store is locked") for e in told) == 1, told
    assert not [e for e in told if "Traceback" in e], told
