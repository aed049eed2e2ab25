"""Mappings in a real hub: Translate in on ingress (a system sends its own XML inside the
platform envelope) and per-destination translation on egress (the delivery a mapped system
receives over HTTP is in its own format)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lxml import etree

from bus.config.models import FieldLimits, System
from bus.hub import Hub
from bus.mapping.stage import outbound_body
from bus.settings import Settings
from bus.validation.secure_parse import secure_parse
from bus.validation.validator import Validator
from tests.support.receivers import config_dir_for, wait_for
from tests.test_hub import MOVE_OUT, resident_notice

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "messages"
TAINOU = System(id="tainou", name="滞納管理", mapping="tainou.yaml")
SUBSCRIBERS = ("juki", "zeimu", "kokuho", "shuno", "kotei", "tainou", "houmu")


class Recorder:
    """A real HTTP endpoint on 127.0.0.1 that keeps every body it is sent, by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path: Path, store_settings: Settings) -> Iterator[tuple[Hub, Recorder]]:
    with Recorder() as recorder:
        config = config_dir_for(tmp_path, dict.fromkeys(SUBSCRIBERS, recorder.port))
        opened = Hub.open(store_settings.model_copy(update={"config_dir": config}))
        pool = opened.workers(1)
        pool.start()
        try:
            yield opened, recorder
        finally:
            pool.stop()
            opened.close()


def tainou_dialect(service: str) -> bytes:
    """A sample standard message as 滞納管理 writes it: platform Header, its own body."""
    return outbound_body(TAINOU, service, (SAMPLES / service / "valid-full.xml").read_bytes())


@pytest.mark.parametrize("screened", [False, True], ids=["parsed-by-validate", "screened"])
def test_translate_in_turns_the_systems_body_into_the_standard(
    hub: tuple[Hub, Recorder], screened: bool
) -> None:
    """``screened``: the HTTP adapters hand over their screening parse of the body."""
    opened, _ = hub
    raw = tainou_dialect("DelinquencyActionNotice")
    assert b"<tn:\xe6\xbb\x9e\xe7\xb4\x8d\xe5\x87\xa6\xe5\x88\x86\xe9\x80\x9a\xe7\x9f\xa5" in raw
    parsed = secure_parse(raw) if screened else None
    message = opened.ingest(raw, adapter="test", source_address="127.0.0.1", parsed=parsed)
    assert message.ack is not None, [f.as_dict() for f in message.findings]
    assert message.service == "DelinquencyActionNotice"
    assert message.document is not None
    name = message.document.find(".//{urn:renkei:platform:standard:1}name")
    assert name is not None and name.text == "\U00020bb7田　結衣"  # 外字 U+E000 → 𠮷
    seizures = message.document.findall(".//{urn:renkei:platform:extension:1}seizure")
    assert len(seizures) == 2


def test_translate_in_refuses_a_bad_record_with_coded_findings(hub: tuple[Hub, Recorder]) -> None:
    opened, _ = hub
    raw = tainou_dialect("DelinquencyActionNotice").replace(
        "<tn:税目>NYUTO</tn:税目>".encode(), "<tn:税目>??</tn:税目>".encode()
    )
    message = opened.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.ack is None
    assert [(f.code, f.item) for f in message.findings] == [("RK-MAP003", "taxItem")]


def test_standard_messages_from_the_mapped_system_pass_unchanged(hub: tuple[Hub, Recorder]) -> None:
    opened, _ = hub
    raw = (SAMPLES / "DelinquencyActionNotice" / "valid-full.xml").read_bytes()
    message = opened.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.ack is not None and message.raw == raw


def test_a_standard_message_from_the_mapped_system_is_parsed_once(
    hub: tuple[Hub, Recorder],
) -> None:
    """Translate in parses to look at the body; Validate checks that very parse."""
    opened, _ = hub
    raw = (SAMPLES / "DelinquencyActionNotice" / "valid-full.xml").read_bytes()
    message = opened.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.ack is not None and message.parsed is not None
    assert message.document is message.parsed.root


@pytest.mark.parametrize(
    "raw",
    [b"<Foo/>", b"<Foo><a></Foo>", b"<Envelope/>", b"<PlatformMessage/>", b"<a", b"\xff"],
)
def test_the_mapped_systems_refusals_are_validates_own(
    hub: tuple[Hub, Recorder], raw: bytes
) -> None:
    opened, _ = hub
    message = opened.ingest(raw, adapter="test", source_address="127.0.0.1")
    assert message.identity is not None and "tainou" in message.identity.systems
    alone = Validator().validate(raw).findings
    assert [f.as_dict() for f in message.findings] == [f.as_dict() for f in alone]


def test_egress_delivers_in_the_destinations_own_format(hub: tuple[Hub, Recorder]) -> None:
    opened, recorder = hub
    message = opened.ingest(
        resident_notice(7, MOVE_OUT), adapter="test", source_address="127.0.0.1"
    )
    assert message.ack is not None and "tainou" in message.ack.destinations
    wait_for(lambda: bool(recorder.bodies.get("/tainou")) and bool(recorder.bodies.get("/shuno")))
    [tainou] = recorder.bodies["/tainou"]
    root = etree.fromstring(tainou)
    assert (
        root[0].findtext("{urn:renkei:platform:envelope:1}messageId") == message.envelope.message_id
    )  # type: ignore[union-attr]
    assert root[1].tag == "{urn:example:tainou:1}住民異動通知"
    assert root[1].find("{urn:example:tainou:1}異動").get("事由") == "D01"  # type: ignore[union-attr]
    [shuno] = recorder.bodies["/shuno"]
    assert b"<svc:ResidentChangeNotice" in shuno  # no mapping: the standard message


def test_an_untranslatable_delivery_is_a_permanent_failure() -> None:
    """The worker turns this error into a permanent outcome (dead-lettered at once)."""
    from bus.mapping.stage import OutboundTranslationError

    raw = (SAMPLES / "ResidentChangeNotice" / "valid-full.xml").read_bytes()
    with pytest.raises(OutboundTranslationError) as caught:
        outbound_body(TAINOU, "ResidentChangeNotice", raw.replace(b"<std:sex>9<", b"<std:sex>7<"))
    assert [(f.code, f.item) for f in caught.value.findings] == [("RK-MAP003", "sex")]
    no_mapping = System(id="zeimu", name="税務", fields=FieldLimits(my_number=True))
    assert outbound_body(no_mapping, "ResidentChangeNotice", raw) is raw
