"""A recording receiver: a small real HTTP server standing in for a connected system
(住民記録, 税, 国保, 滞納管理…) in demos and tests.

    python samples/systems/recording_receiver.py --port 18101 --log received.jsonl

Every POST is recorded as one JSON line (messageId, path, service, tenant, subject, an order
check per (system, subject)). Each system applies a messageId once (Idempotent Receiver); a
resend is recorded with ``"duplicate": true``. The log is re-read at start, so a receiver killed and
restarted still recognises what it applied before. Failure modes for the tests: every request
answered with ``--fail-status``, permanent 400 for ``--fail-message-ids`` (poison), ``--delay``
before answering (timeouts), ``--down`` (the process runs but does not listen). Inquiries are
answered with a canned valid reply built by ``bus.samplegen`` (its own messageId,
correlationId = the request's), or a deliberately bad one with ``--reply-mode``.

The path's last segment names the system (``/juki`` → juki), so one receiver can play several.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lxml import etree

ENV = "urn:renkei:platform:envelope:1"
SERVICE_NS = "urn:renkei:platform:service:1"
INQUIRIES = ("AddresseeInquiry", "TaxAssessmentInquiry", "DelinquencyInquiry")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass
class Options:
    log: Path
    fail_status: int | None = None
    fail_message_ids: frozenset[str] = frozenset()
    retry_after: str | None = None
    delay: float = 0.0
    reply_mode: str = "valid"  # valid | invalid | wrong-correlation | empty
    fsync: bool = False


@dataclass
class State:
    """What has been applied, per messageId, and the last issuedAt per (system, subject)."""

    options: Options
    applied: set[tuple[str, str]] = field(default_factory=set)  # (system, messageId)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    last_issued: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> None:
        if not self.options.log.exists():
            return
        for line in self.options.log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if record.get("applied"):
                self.applied.add((record["system"], record["messageId"]))
                key = (record["system"], record.get("subject") or "")
                self.counts[key] = record["order"]
                if record.get("issuedAt"):
                    self.last_issued[key] = record["issuedAt"]

    def record(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply once; returns the JSON line written (with the order check)."""
        with self.lock:
            applied = (fields["system"], fields["messageId"])
            key = (fields["system"], fields.get("subject") or "")
            if applied in self.applied:
                line = {**fields, "applied": False, "duplicate": True}
            else:
                self.applied.add(applied)
                self.counts[key] = self.counts.get(key, 0) + 1
                issued, previous = fields.get("issuedAt"), self.last_issued.get(key)
                in_order = previous is None or issued is None or issued >= previous
                if issued:
                    self.last_issued[key] = max(issued, previous or issued)
                line = {
                    **fields,
                    "applied": True,
                    "duplicate": False,
                    "order": self.counts[key],
                    "in_order": in_order,
                }
            with self.options.log.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                handle.flush()
                if self.options.fsync:
                    os.fsync(handle.fileno())
            return line


def _text(root: etree._Element, path: str) -> str | None:
    found = root.find(path)
    return found.text if found is not None and found.text else None


def header_fields(body: bytes) -> dict[str, Any]:
    root = etree.fromstring(body, _PARSER)
    header = root.find(f".//{{{ENV}}}Header")
    if header is None:
        return {}
    e = f"{{{ENV}}}"
    return {
        "messageId": _text(header, f"{e}messageId"),
        "correlationId": _text(header, f"{e}correlationId"),
        "relatesTo": _text(header, f"{e}relatesTo"),
        "service": _text(header, f"{e}service/{e}name"),
        "tenant": _text(header, f"{e}client/{e}tenant"),
        "subject": _text(header, f"{e}subject"),
        "issuedAt": _text(header, f"{e}issuedAt"),
    }


def canned_reply(request: dict[str, Any], mode: str) -> bytes:
    """A valid ``…Reply`` for the request (built by bus.samplegen), or a broken one."""
    from bus.samplegen.messages import MessageSpec, build_message, serialize
    from bus.samplegen.values import TOWNS

    if mode == "empty":
        return b""
    town = next((t for t in TOWNS if t.code == request.get("tenant")), TOWNS[0])
    seed = uuid.UUID(request["messageId"]).int % 1_000_000 if request.get("messageId") else 0
    document = build_message(MessageSpec(f"{request['service']}Reply", seed, town, full=False))
    header = document.find(f"{{{ENV}}}Header")
    assert header is not None
    header.find(f"{{{ENV}}}messageId").text = str(uuid.uuid4())  # type: ignore[union-attr]
    correlation = header.find(f"{{{ENV}}}correlationId")
    assert correlation is not None
    correlation.text = (
        str(uuid.uuid4()) if mode == "wrong-correlation" else request.get("messageId")
    )
    if mode == "invalid":
        service = document.find(f"{{{SERVICE_NS}}}*")
        assert service is not None
        for child in list(service):
            service.remove(child)  # required items missing: fails the XSD
    return serialize(document)


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        options = self.server.state.options
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if options.delay:
            time.sleep(options.delay)
        if options.fail_status:
            headers = {"Retry-After": options.retry_after} if options.retry_after else {}
            self._answer(options.fail_status, b"failing on purpose", headers)
            return
        try:
            fields = header_fields(body)
        except etree.XMLSyntaxError:
            self._answer(400, b"not XML")
            return
        message_id = self.headers.get("Renkei-Message-Id") or fields.get("messageId")
        if not message_id:
            self._answer(400, b"no messageId")
            return
        if message_id in options.fail_message_ids:
            self._answer(400, b"refused (poison)")
            return
        fields.update(
            messageId=message_id,
            path=self.path,
            system=self.path.rstrip("/").rsplit("/", 1)[-1],
            headerService=self.headers.get("Renkei-Service"),
            headerTenant=self.headers.get("Renkei-Tenant"),
            receivedAt=time.time(),
        )
        self.server.state.record(fields)
        if fields.get("service") in INQUIRIES:
            reply = canned_reply(fields, options.reply_mode)
            self._answer(200, reply, {"Content-Type": "application/xml; charset=utf-8"})
            return
        self._answer(200, b"")

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the JSONL file is the record


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        super().__init__(address, Handler)
        self.state = state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log", type=Path, required=True, help="JSONL file of received messages")
    parser.add_argument("--fail-status", type=int, help="answer every request with this status")
    parser.add_argument("--retry-after", help="Retry-After header sent with --fail-status")
    parser.add_argument("--fail-message-ids", default="", help="IDs refused with 400 (poison)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument(
        "--reply-mode", default="valid", choices=["valid", "invalid", "wrong-correlation", "empty"]
    )
    parser.add_argument("--down", action="store_true", help="run without listening")
    parser.add_argument("--fsync", action="store_true", help="fsync the log after each line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.down:
        print("down (not listening)", flush=True)
        while True:
            time.sleep(3600)
    options = Options(
        log=args.log,
        fail_status=args.fail_status,
        fail_message_ids=frozenset(filter(None, args.fail_message_ids.split(","))),
        retry_after=args.retry_after,
        delay=args.delay,
        reply_mode=args.reply_mode,
        fsync=args.fsync,
    )
    state = State(options)
    state.load()
    server = Server((args.host, args.port), state)
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bus.samplegen for replies
    main()
