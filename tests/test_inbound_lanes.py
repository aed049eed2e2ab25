"""The inbound lanes (adapters/inbound.py) and the schema pool (bus/validation/schema.py).

RENKEI_INGEST_THREADS bounds how many inquiries run the pipeline at once; a notification takes
the batch lane and a body the screening parse refuses (or whose root cannot be a message) the
default pool, so neither waits for one of those threads; no compiled XMLSchema is ever used by
two threads at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from adapters.inbound import Caller, _refusal_needs_no_io
from bus.hub import Hub
from bus.pipeline import UsernameToken
from bus.settings import Settings
from bus.store.audit import AuditEntry
from bus.store.rejection_audit import RejectionAuditWriter
from bus.store.writers import write_transaction
from bus.validation.schema import SchemaPool
from bus.validation.validator import Validator
from tests.support.hub_server import SAMPLES, HubServer, hub_server, sample, serialize

PROVIDER_DELAY = 4.0  # seconds the provider takes to answer an inquiry (holds its thread)
REST = "/api/v1/messages"


def test_ingest_threads_setting() -> None:
    assert Settings(ingest_threads=3).ingest_threads == 3
    with pytest.raises(ValueError):
        Settings(ingest_threads=0)


def _hold_together(pool: SchemaPool, holders: int, lent: list[int]) -> None:
    """``holders`` threads, each holding a lent schema at the same moment."""
    together = threading.Barrier(holders)
    lock = threading.Lock()

    def hold() -> None:
        with pool.lend() as schema:
            with lock:
                lent.append(id(schema))
            together.wait(timeout=60)

    threads = [threading.Thread(target=hold) for _ in range(holders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_schema_pool_never_lends_one_schema_to_two_threads_at_once() -> None:
    pool = SchemaPool(max_idle=3)
    lent: list[int] = []
    _hold_together(pool, 5, lent)
    assert len(set(lent)) == 5 and pool.compiled == 5  # five at once: five schemas
    _hold_together(pool, 3, [])
    assert pool.compiled == 5  # the three kept were lent again, none compiled
    _hold_together(pool, 4, [])
    assert pool.compiled == 6  # only three are kept: a fourth at once is compiled anew


def test_threads_sharing_a_validator_each_get_their_own_findings() -> None:
    validator = Validator()
    bodies = [path.read_bytes() for path in sorted(SAMPLES.glob("*/*.xml"))]
    assert len(bodies) > 40

    def findings(body: bytes) -> list[tuple[str, str]]:
        return [(f.code, f.path) for f in validator.validate(body).findings]

    alone = [findings(body) for body in bodies]
    assert sum(1 for f in alone if any(code.startswith("RK-XSD") for code, _ in f)) >= 5
    with ThreadPoolExecutor(8) as threads:
        together = list(threads.map(findings, bodies * 4))
    assert together == alone * 4


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """Two ingest threads; the provider (the recording receiver) answers after 4 s."""
    with hub_server(
        tmp_path_factory.mktemp("lanes"),
        env={"RENKEI_INGEST_THREADS": "2"},
        receiver_args=("--delay", str(PROVIDER_DELAY)),
    ) as server:
        yield server


def _post(hub: HubServer, path: str, body: bytes, media: str) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = httpx.post(hub.url + path, content=body, headers={"Content-Type": media}, timeout=60)
    return response, time.perf_counter() - start


def _rest_codes(response: httpx.Response) -> list[str]:
    return [finding["code"] for finding in response.json()["findings"]]


# > 64 KiB, on a root named like a message: screened by the parse in a thread
ATTRIBUTES = b" ".join(b"a%d='x'" % i for i in range(20000))
MANY_ATTRIBUTES = b"<PlatformMessage " + ATTRIBUTES + b"/>"
HOSTILE = [
    (f"{REST}/ResidentChangeNotice", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "RK-SEC001"),
    (f"{REST}/ResidentChangeNotice", MANY_ATTRIBUTES, "RK-SEC004"),
    (f"{REST}/ResidentChangeNotice", b"<r " + ATTRIBUTES + b"/>", "RK-ENV001"),  # no parse
    (f"{REST}/ResidentChangeNotice", b"<html><body>hello</body></html>", "RK-ENV001"),
    ("/soap/ResidentChangeNotice", b"<r>\x00</r>", "RK-SEC006"),
]


def test_hostile_input_is_refused_while_every_ingest_thread_is_held(hub: HubServer) -> None:
    inquiry = serialize(sample("AddresseeInquiry"))
    with ThreadPoolExecutor(2) as callers:
        held = [
            callers.submit(_post, hub, f"{REST}/AddresseeInquiry", inquiry, "application/xml")
            for _ in range(2)
        ]
        time.sleep(1.5)  # both inquiries wait for the provider, each holding an ingest thread
        for path, body, code in HOSTILE:
            response, elapsed = _post(hub, path, body, "text/xml")
            if path.startswith(REST):
                assert _rest_codes(response) == [code]
            else:  # a SOAP Client fault
                assert response.status_code == 500 and f">{code}<".encode() in response.content
            assert elapsed < 1.5, (code, elapsed)  # not queued behind the held inquiries
        assert not any(call.done() for call in held)
        notice = serialize(sample("ResidentChangeNotice"))
        response, elapsed = _post(hub, f"{REST}/ResidentChangeNotice", notice, "application/xml")
        # a notification takes the batch lane: it does not wait for an ingest thread
        assert response.status_code == 202 and elapsed < 1.5, (response.text, elapsed)
        other = inquiry.replace(_message_id(inquiry), str(uuid.uuid4()).encode())
        third, elapsed = _post(hub, f"{REST}/AddresseeInquiry", other, "application/xml")
        # a third inquiry (not a resend: that gets its stored reply) waits for one of the
        # two ingest threads, then for the provider
        assert third.status_code == 200 and elapsed > PROVIDER_DELAY + 1.5, (third.text, elapsed)
        for call in held:
            answered, _ = call.result(timeout=60)
            assert answered.status_code == 200, answered.text


def _message_id(document: bytes) -> bytes:
    start = document.index(b"<env:messageId>") + len(b"<env:messageId>")
    return document[start : document.index(b"</env:messageId>", start)]


def test_a_refusal_runs_on_the_event_loop_only_when_nothing_in_it_can_wait(
    tmp_path: pytest.TempPathFactory,
) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))  # type: ignore[operator]
    try:
        by_address = Caller("127.0.0.1", None)
        hub.config.current()
        assert _refusal_needs_no_io(hub, by_address, None)
        assert _refusal_needs_no_io(hub, Caller("127.0.0.1", None, b"certificate"), None)
        # an API key or a UsernameToken is looked up in the database
        assert not _refusal_needs_no_io(hub, Caller("127.0.0.1", "rk_key"), None)
        token = UsernameToken("juki", "digest", "nonce", "2026-11-26T00:00:00Z", "type")
        assert not _refusal_needs_no_io(hub, by_address, token)
        # the configuration is due for its poll of the database
        time.sleep(1.1)
        assert not _refusal_needs_no_io(hub, by_address, None)
        hub.config.current()
        assert _refusal_needs_no_io(hub, by_address, None)
        # the audit writer's queue is full: submitting would wait
        hub.rejections.close()
        hub.rejections = RejectionAuditWriter(hub.store.sessions, max_pending=1)
        with write_transaction(hub.store.sessions):  # the writer waits for this write turn
            hub.rejections.submit(AuditEntry("000000", "rejected"))
            deadline = time.monotonic() + 10
            while not hub.rejections.has_room() and time.monotonic() < deadline:
                time.sleep(0.01)  # until the writer has taken it (and waits for the turn)
            assert _refusal_needs_no_io(hub, by_address, None)
            hub.rejections.submit(AuditEntry("000000", "rejected"))  # queued behind it
            assert not _refusal_needs_no_io(hub, by_address, None)
    finally:
        hub.close()
