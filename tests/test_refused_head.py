"""A platform-XML body refused from its first bytes (adapters/inbound.py ``read_body``): the
head's byte checks give the refusal the whole body would get, the hub answers before reading
the rest, the server discards the rest, and the connection stays usable."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from adapters.inbound import HEAD_BYTES, _refused_head
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import AuditRecord
from bus.validation.secure_parse import refuse_early
from bus.validation.validator import MESSAGE_ROOT_NAMES
from tests.support.hub_server import (
    SAMPLES,
    HubServer,
    hub_server,
    sample,
    serialize,
    soap_envelope,
)

BIG = 2_000_000
HUGE_ATTRIBUTE = b"<r a='" + b"A" * BIG + b"'/>"
PADDING = b" " * 5000  # longer than the head: the head alone says nothing


def _bodies() -> list[bytes]:
    valid = sorted(SAMPLES.glob("*/valid-full.xml"))[:6]
    long_comment = b"<!--" + b"c" * 6000 + b"-->"
    long_declaration = b"<?xml version='1.0'" + b" " * 5000 + b"encoding='Shift_JIS'?><r/>"
    return [
        *(path.read_bytes() for path in valid),
        HUGE_ATTRIBUTE,
        b"<!DOCTYPE r [<!ENTITY a 'b'>]><r>" + b"x" * 9000 + b"</r>",
        b"<?xml version='1.0' encoding='UTF-16'?><PlatformMessage/>" + b" " * 9000,
        b"\xff\xfe<\x00r\x00>\x00" + b"\x00" * 9000,
        b"\xef\xbb\xbf<?xml version='1.0'?>" + long_comment + b"<!DOCTYPE x><x/>",
        long_comment + b"<html>" + b"y" * 9000 + b"</html>",
        long_declaration,
        PADDING + b"<PlatformMessage/>",  # blank head: not refused from the head
        PADDING + b"<r/>",
        b"<PlatformMessage>" + b"z" * 9000 + b"</PlatformMessage>",
        b"<r>" + b"n" * 6000 + b"\x00</r>",  # a NUL only after the head
        b"<r>\x00" + b"n" * 9000 + b"</r>",
    ]


def _nul_after(body: bytes, cut: int) -> bool:
    return body.find(b"\x00") >= cut


@pytest.mark.parametrize("body", _bodies(), ids=lambda body: repr(body[:24]))
def test_a_refused_head_gets_the_refusal_of_the_whole_body(body: bytes) -> None:
    whole = refuse_early(body, roots=MESSAGE_ROOT_NAMES)
    cuts = sorted({*range(4, 200, 7), *range(HEAD_BYTES - 64, HEAD_BYTES + 64, 5), 5003, 6010})
    refused_heads = 0
    for cut in (c for c in cuts if c < len(body)):
        refused = _refused_head(body[:cut])
        if refused is None:
            continue
        refused_heads += 1
        assert refused.head == body[:cut]
        if _nul_after(body, cut) and whole is not None and whole.findings[0].code == "RK-SEC006":
            continue  # the documented exception: the whole body's NUL is reported first
        assert whole is not None, (cut, refused.screened.findings)
        assert [f.as_dict() for f in refused.screened.findings] == [
            f.as_dict() for f in whole.findings
        ], cut
    if whole is None:
        assert refused_heads == 0


def test_what_the_head_decides() -> None:
    assert _refused_head(HUGE_ATTRIBUTE[:HEAD_BYTES]) is not None  # foreign root
    assert _refused_head((PADDING + b"<r/>")[:HEAD_BYTES]) is None  # all blank so far
    assert _refused_head(b"<PlatformMessage>" + b"z" * HEAD_BYTES) is None  # needs the parse
    nul_later = _refused_head(b"<r>" + b"n" * HEAD_BYTES)
    assert nul_later is not None and nul_later.screened.findings[0].code == "RK-ENV001"


@pytest.fixture(scope="module", params=["httptools", "h11"])
def hub(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[HubServer, Path]]:
    """The hub under both of uvicorn's HTTP implementations (``renkei serve`` uses httptools,
    its mTLS listener h11): each must discard the unread rest of an answered request."""
    tmp = tmp_path_factory.mktemp("refused-head")
    with hub_server(tmp, http=request.param) as server:
        yield server, tmp / "hub-data"


def _rejections(data_dir: Path, minimum: int) -> list[dict[str, object]]:
    store = open_store(Settings(data_dir=data_dir))
    try:
        deadline = time.monotonic() + 20
        while True:
            with store.sessions() as session:
                query = select(AuditRecord.detail).where(AuditRecord.event == "rejected")
                details = list(session.scalars(query))
            if len(details) >= minimum or time.monotonic() > deadline:
                return details
            time.sleep(0.1)
    finally:
        store.close()


def test_a_large_hostile_body_is_answered_and_the_connection_reused(
    hub: tuple[HubServer, Path],
) -> None:
    """http.client sends the whole 2 MB body, then reads the coded refusal; the next request
    on the same connection is a valid message, accepted (the rest of the body was discarded,
    not read as a request)."""
    server, data_dir = hub
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            "POST", "/soap/ResidentChangeNotice", HUGE_ATTRIBUTE, {"Content-Type": "text/xml"}
        )
        fault = connection.getresponse()
        assert fault.status == 500 and b">RK-ENV001<" in fault.read()
        headers = {"Content-Type": "text/xml", "SOAPAction": '""'}
        body = soap_envelope(sample("ResidentChangeNotice"))
        connection.request("POST", "/soap/ResidentChangeNotice", body, headers)
        acknowledged = connection.getresponse()
        assert acknowledged.status == 200, acknowledged.read()
        acknowledged.read()
        path = "/api/v1/messages/ResidentChangeNotice"
        connection.request("POST", path, HUGE_ATTRIBUTE, {"Content-Type": "application/xml"})
        problem = connection.getresponse()
        assert problem.status == 422  # as for a small body with a foreign root
        assert [f["code"] for f in json.loads(problem.read())["findings"]] == ["RK-ENV001"]
        valid = serialize(sample("ResidentChangeNotice"))
        connection.request("POST", path, valid, {"Content-Type": "application/xml"})
        accepted = connection.getresponse()
        assert accepted.status == 202, accepted.read()
        accepted.read()
    finally:
        connection.close()
    read = [
        detail["raw_bytes"]
        for detail in _rejections(data_dir, 2)
        if detail.get("codes") == ["RK-ENV001"]
    ]
    # recorded with the bytes read before the answer: the head, not the 2 MB
    assert len(read) == 2 and all(HEAD_BYTES <= int(str(n)) < BIG for n in read), read


def test_httpx_gets_the_coded_refusal_of_a_large_body(hub: tuple[HubServer, Path]) -> None:
    server, _ = hub
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(3):
            response = client.post(
                "/api/v1/messages/ResidentChangeNotice",
                content=b"<!DOCTYPE r [<!ENTITY a 'b'>]><r>" + b"x" * BIG + b"</r>",
                headers={"Content-Type": "application/xml"},
            )
            assert [f["code"] for f in response.json()["findings"]] == ["RK-SEC001"]
        json_body = client.post(  # JSON is not screened as XML: read whole, refused as JSON
            "/api/v1/messages/ResidentChangeNotice",
            content=b"<r>" + b"x" * BIG,
            headers={"Content-Type": "application/json"},
        )
        assert [f["code"] for f in json_body.json()["findings"]] == ["RK-API004"]
