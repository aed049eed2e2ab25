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

It is a small asyncio HTTP/1.1 server with keep-alive (one thread, no per-request thread or
header parsing by ``email``): it stands in for a vendor system in benchmarks too, so its own
cost should stay small next to the hub's. Each record is written and flushed (to the OS)
before the answer is sent, so a killed receiver never loses what it acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any

from lxml import etree

ENV = "urn:renkei:platform:envelope:1"
SERVICE_NS = "urn:renkei:platform:service:1"
INQUIRIES = ("AddresseeInquiry", "TaxAssessmentInquiry", "DelinquencyInquiry")
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, collect_ids=False
)


@dataclass
class Options:
    log: Path
    fail_status: int | None = None
    fail_message_ids: frozenset[str] = frozenset()
    retry_after: str | None = None
    delay: float = 0.0
    reply_mode: str = "valid"  # valid | invalid | wrong-correlation | wrong-tenant | empty
    fsync: bool = False


@dataclass
class State:
    """What has been applied, per messageId, and the last issuedAt per (system, subject)."""

    options: Options
    applied: set[tuple[str, str]] = field(default_factory=set)  # (system, messageId)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    last_issued: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    handle: IO[str] | None = None  # the log, kept open in append mode

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
            if self.handle is None:
                self.handle = self.options.log.open("a", encoding="utf-8")
            self.handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.handle.flush()  # in the OS before the answer: survives a killed process
            if self.options.fsync:
                os.fsync(self.handle.fileno())
            return line


_E = f"{{{ENV}}}"
# Header field → (child, grandchild) element names; read in one pass over the Header's
# children (a path lookup per field cost more than parsing the whole message)
_FIELDS = {
    "messageId": ("messageId", None),
    "correlationId": ("correlationId", None),
    "relatesTo": ("relatesTo", None),
    "service": ("service", "name"),
    "tenant": ("client", "tenant"),
    "subject": ("subject", None),
    "issuedAt": ("issuedAt", None),
}
_WANTED = {
    f"{_E}{child}": [(name, None if grand is None else f"{_E}{grand}")]
    for name, (child, grand) in _FIELDS.items()
    if child not in ("service", "client")
}
_WANTED[f"{_E}service"] = [("service", f"{_E}name")]
_WANTED[f"{_E}client"] = [("tenant", f"{_E}tenant")]


def header_fields(body: bytes) -> dict[str, Any]:
    root = etree.fromstring(body, _PARSER)
    header = root.find(f"{_E}Header")  # a PlatformMessage's first child …
    if header is None:
        header = root.find(f".//{_E}Header")  # … or inside a SOAP envelope
    if header is None:
        return {}
    found: dict[str, str | None] = {}
    for child in header:
        for name, grand in _WANTED.get(child.tag, ()):
            if name in found:
                continue  # the first occurrence counts
            element = child if grand is None else child.find(grand)
            found[name] = element.text or None if element is not None else None
    return {name: found.get(name) for name in _FIELDS}


def canned_reply(request: dict[str, Any], mode: str) -> bytes:
    """A valid ``…Reply`` for the request (built by bus.samplegen), or a broken one."""
    from bus.samplegen.messages import MessageSpec, build_message, serialize
    from bus.samplegen.values import TOWNS

    if mode == "empty":
        return b""
    asked_for = request.get("tenant")
    town = next((t for t in TOWNS if t.code == asked_for), TOWNS[0])
    if mode == "wrong-tenant":  # another town's record (a shared provider mixing towns up)
        town = next(t for t in TOWNS if t.code != asked_for)
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
    tenant = header.find(f"{{{ENV}}}client/{{{ENV}}}tenant")
    if asked_for and mode != "wrong-tenant" and tenant is not None:
        tenant.text = (
            asked_for  # a town the sample data does not have: answered for it all the same
        )
    if mode == "invalid":
        service = document.find(f"{{{SERVICE_NS}}}*")
        assert service is not None
        for child in list(service):
            service.remove(child)  # required items missing: fails the XSD
    return serialize(document)


Answer = tuple[int, bytes, dict[str, str]]


def handle_post(state: State, path: str, headers: dict[str, str], body: bytes) -> Answer:
    """What a POST of ``body`` to ``path`` is answered with (recording it when applied)."""
    options = state.options
    if options.fail_status:
        extra = {"Retry-After": options.retry_after} if options.retry_after else {}
        return options.fail_status, b"failing on purpose", extra
    try:
        fields = header_fields(body)
    except etree.XMLSyntaxError:
        return 400, b"not XML", {}
    message_id = headers.get("renkei-message-id") or fields.get("messageId")
    if not message_id:
        return 400, b"no messageId", {}
    if message_id in options.fail_message_ids:
        return 400, b"refused (poison)", {}
    fields.update(
        messageId=message_id,
        path=path,
        system=path.rstrip("/").rsplit("/", 1)[-1],
        headerService=headers.get("renkei-service"),
        headerTenant=headers.get("renkei-tenant"),
        receivedAt=time.time(),
    )
    state.record(fields)
    if fields.get("service") in INQUIRIES:
        reply = canned_reply(fields, options.reply_mode)
        return 200, reply, {"Content-Type": "application/xml; charset=utf-8"}
    return 200, b"", {}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _response(status: int, body: bytes, headers: dict[str, str], close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and the headers (names lower-cased) of a request head."""
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


class Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive on one connection: requests are answered in order, straight
    from the event loop's read callback (no task or stream objects per request)."""

    MAX_HEAD = 64 * 1024

    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting = False  # a --delay answer is pending: later requests wait for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.waiting:
            self._serve()

    def _serve(self) -> None:
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > self.MAX_HEAD:
                    self._write(400, b"header too long", {}, close=True)
                return
            try:
                method, target, version, headers = _parse_head(bytes(self.buffer[:end]))
                length = int(headers.get("content-length") or 0)
            except ValueError:
                self._write(400, b"bad request", {}, close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            connection = headers.get("connection", "").lower()
            close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
            if method == "POST" and self.state.options.delay:
                self.waiting = True
                asyncio.get_running_loop().call_later(
                    self.state.options.delay, self._delayed, target, headers, body, close
                )
                return
            self._answer(method, target, headers, body, close)

    def _delayed(self, target: str, headers: dict[str, str], body: bytes, close: bool) -> None:
        self.waiting = False
        self._answer("POST", target, headers, body, close)
        self._serve()

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes, close: bool
    ) -> None:
        if method != "POST":
            self._write(501, b"only POST", {}, close)
            return
        # applied even when the client has given up meanwhile (a timeout): a real system
        # does not know either, and the hub's resend is then recorded as a duplicate
        self._write(*handle_post(self.state, target, headers, body), close=close)

    def _write(self, status: int, body: bytes, headers: dict[str, str], close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_response(status, body, headers, close))
        if close:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, state: State) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(state), host, port, reuse_address=True, backlog=128
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


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
        "--reply-mode",
        default="valid",
        choices=["valid", "invalid", "wrong-correlation", "wrong-tenant", "empty"],
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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, state))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bus.samplegen for replies
    main()
