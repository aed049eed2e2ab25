"""JSON logs: one line per event from a real hub, its own events and uvicorn's alike, each
with a zoned timestamp and the message's ids, and never a name, an address or a 個人番号 in
clear text."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.observability.logs import configure_logging, mask_personal
from tests.support.hub_server import hub_server, sample, serialize
from tests.support.receivers import wait_for

SERVICE = "ResidentChangeNotice"
XML = {"Content-Type": "application/xml"}
ADDRESS = "佐賀県杵島郡江北町大字山口59番地17"
PERSONAL_ITEMS = ("myNumber", "name", "nameKana", "address", "previousAddress", "dateOfBirth")


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON


def _personal_values(*documents: Any) -> set[str]:
    values = set()
    for document in documents:
        for item in PERSONAL_ITEMS:
            for element in document.iter(f"{{{NS_STANDARD}}}{item}"):
                values.add(element.text)
                values.update(v for k, v in element.attrib.items() if k == "iso")
    return {v for v in values if v}


def test_a_real_hub_logs_one_json_line_per_event_without_personal_data(tmp_path: Path) -> None:
    stored, refused, poison = (
        sample(SERVICE),
        sample(SERVICE, "invalid-RK-DOM002-my-number-check-digit.xml"),
        sample(SERVICE),
    )
    ids = [d.findtext(f".//{{{NS_ENVELOPE}}}messageId") for d in (stored, refused, poison)]
    personal = _personal_values(stored, refused, poison)
    log_path = tmp_path / "hub.log"
    with (
        log_path.open("wb") as log_file,
        hub_server(
            tmp_path,
            log_level="info",
            stderr=log_file,
            receiver_args=("--fail-message-ids", str(ids[2])),
        ) as hub,
    ):
        url = f"{hub.url}/api/v1/messages/{SERVICE}"
        assert httpx.post(url, content=serialize(stored), headers=XML).status_code == 202
        assert httpx.post(url, content=serialize(refused), headers=XML).status_code == 422
        assert httpx.post(url, content=serialize(poison), headers=XML).status_code == 202

        def dead_logged() -> bool:
            return any(line.get("event") == "delivery.dead" for line in _lines(log_path))

        wait_for(dead_logged, timeout=60)

    lines = _lines(log_path)
    text = log_path.read_text(encoding="utf-8")
    assert personal and not [value for value in personal if value in text]
    for line in lines:
        moment = datetime.fromisoformat(line["timestamp"])
        assert moment.tzinfo is not None and moment.utcoffset() is not None
        assert line["level"] in {"debug", "info", "warning", "error", "critical"}
        assert line["event"]

    by_event = {(line["event"], line.get("messageId")): line for line in lines}
    accepted = by_event[("message.stored", ids[0])]
    assert accepted["service"] == SERVICE
    assert accepted["tenant"] == "414247" and accepted["system"] == "juki"
    assert accepted["correlationId"] is None  # a notification: present, not set
    assert accepted["adapter"] == "rest" and accepted["destinations"]
    rejected = by_event[("message.rejected", ids[1])]
    assert rejected["codes"] == ["RK-DOM002"] and rejected["tenant"] == "414247"
    dead = next(line for (event, mid), line in by_event.items() if event == "delivery.dead")
    assert dead["messageId"] == ids[2] and dead["service"] == SERVICE
    assert dead["system"] in accepted["destinations"] and dead["tenant"] == "414247"
    # uvicorn's own records went through the same formatter; no access line by default
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]


def test_the_access_log_is_a_setting() -> None:
    """uvicorn writes (and even formats) its line per request only when its access logger
    has a handler to reach (``hasHandlers``, read as each connection starts): off by
    default, on with ``RENKEI_ACCESS_LOG=true``, and then in the same JSON form."""
    access = logging.getLogger("uvicorn.access")
    stream = io.StringIO()
    try:
        configure_logging("INFO", stream=stream)
        assert not access.hasHandlers()
        configure_logging("INFO", stream=stream, access_log=True)
        assert access.hasHandlers()
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/soap/X", "1.1", 202)
    finally:
        configure_logging("INFO")  # back to stderr
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["logger"] == "uvicorn.access" and "POST /soap/X" in line["event"]


def test_a_library_record_is_masked_and_keeps_the_bound_context() -> None:
    """A library logging a 個人番号 and an address (as an ``extra`` field): the JSON line
    masks both and still carries the message's ids bound around the work."""
    from bus.observability.logs import bound, context_of

    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        context = context_of(message_id="m-1", service=SERVICE, tenant="414247", system="zeimu")
        with bound(context):
            logging.getLogger("zeep.transports").info(
                "HTTP Post to %s: <myNumber>938166622636</myNumber>",
                "http://127.0.0.1/zeimu",
                extra={"address": ADDRESS},
            )
    finally:
        configure_logging("INFO")  # back to stderr
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert "938166622636" not in stream.getvalue() and "山口" not in stream.getvalue()
    assert "***********6" in line["event"]
    assert line["address"] == "＊" * len(ADDRESS)
    assert line["logger"] == "zeep.transports" and line["messageId"] == "m-1"
    assert line["tenant"] == "414247" and line["system"] == "zeimu"
    assert line["timestamp"].endswith("Z")


def test_a_my_number_shape_is_masked_but_a_uuid_ending_in_digits_is_not() -> None:
    event = {
        "event": "x",
        "messageId": "708cbebc-d73d-4fc9-b277-649690170007",
        "detail": "個人番号 938166622636 を照会",
    }
    masked = mask_personal(None, "info", dict(event))
    assert masked["messageId"] == event["messageId"]
    assert "938166622636" not in masked["detail"] and masked["detail"].startswith("個人番号 ")
