"""What the sample SOAP systems share: the platform Header as a spyne model, the reply
header, and the WSGI application around a spyne service (with ``GET …/received``).

The Header is declared in each system's own namespace: spyne 2.14 writes a header message
reference with the header class's namespace but defines the message in the application's
(zeep then cannot resolve it), so a header in another namespace gives an unusable WSDL.
The hub binds the platform Header to it by local name.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from spyne import Application, ComplexModel, ServiceBase, Unicode
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from samples.systems.received import ReceivedLog

JST = timezone(timedelta(hours=9))
PROTOCOL_VERSION = "1.0"
MAX_REQUEST_BYTES = 2 * 1024 * 1024
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class HeaderTypes:
    header: type[ComplexModel]
    service: type[ComplexModel]
    endpoint: type[ComplexModel]


def header_types(namespace: str) -> HeaderTypes:
    """The platform Header (DESIGN §3) as spyne models in ``namespace``."""

    class ServiceRef(ComplexModel):
        __namespace__ = namespace
        name = Unicode(min_occurs=1)
        version = Unicode(min_occurs=1)

    class Endpoint(ComplexModel):
        __namespace__ = namespace
        tenant = Unicode(min_occurs=1, pattern="[0-9]{6}")
        system = Unicode(min_occurs=1)

    class Header(ComplexModel):
        __namespace__ = namespace
        messageId = Unicode(min_occurs=1)
        correlationId = Unicode
        relatesTo = Unicode
        service = ServiceRef.customize(min_occurs=1)
        client = Endpoint.customize(min_occurs=1)
        target = Endpoint
        subject = Unicode
        userId = Unicode
        issuedAt = Unicode(min_occurs=1)
        protocolVersion = Unicode(min_occurs=1)

    return HeaderTypes(Header, ServiceRef, Endpoint)


def reply_header(types: HeaderTypes, request: Any, system: str) -> Any:
    """An answer's header: its own messageId, correlationId = the request's."""
    service = request.service.name + "Reply"
    return types.header(
        messageId=str(uuid.uuid4()),
        correlationId=request.messageId,
        service=types.service(name=service, version=request.service.version),
        client=types.endpoint(tenant=request.client.tenant, system=system),
        subject=request.subject,
        issuedAt=datetime.now(JST).isoformat(timespec="seconds"),
        protocolVersion=PROTOCOL_VERSION,
    )


def record_notice(log: ReceivedLog, ctx: Any, body: Any) -> None:
    """Keep a received notification (the operation's name is the service)."""
    header = ctx.in_header
    if header is None:  # the hub always sends it; a bare call is still recorded
        log.record(ctx.method_request_string.rpartition("}")[2], str(uuid.uuid4()))
        return
    log.record(
        header.service.name,
        header.messageId,
        tenant=header.client.tenant,
        subject=header.subject,
        fields=_plain(body),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, ComplexModel):
        return {k: _plain(v) for k, v in value.as_dict().items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class SoapSystem:
    """WSGI: the spyne service at ``path`` (POST, ``?wsdl``) and ``path/received`` (GET)."""

    def __init__(
        self, services: Iterable[type[ServiceBase]], tns: str, path: str, log: ReceivedLog
    ) -> None:
        application = Application(
            list(services),
            tns=tns,
            in_protocol=Soap11(validator="lxml"),
            out_protocol=Soap11(),
        )
        self.path = path.rstrip("/")
        self.log = log
        self.spyne = WsgiApplication(application, max_content_length=MAX_REQUEST_BYTES)

    def publish(self, url: str) -> None:
        """Fix the WSDL's address (spyne would take the first caller's Host forever)."""
        self.spyne.doc.wsdl11.build_interface_document(url)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "").rstrip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == f"{self.path}/received" and method == "GET":
            body = json.dumps(self.log.rows(), ensure_ascii=False).encode("utf-8")
            return _respond(start_response, "200 OK", body, "application/json")
        if path != self.path:
            return _respond(start_response, "404 Not Found", b"not found", "text/plain")
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = environ["wsgi.input"].read(length)
            if b"<!DOCTYPE" in data[:4096].upper():  # refused before spyne parses it
                return _respond(start_response, "400 Bad Request", b"DOCTYPE", "text/plain")
            environ["wsgi.input"] = _Replay(data)
        return self.spyne(environ, start_response)  # type: ignore[no-any-return]


class _Replay:
    """The request body, read once for the DOCTYPE check, handed on to spyne."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else self.position + size
        chunk, self.position = self.data[self.position : end], min(end, len(self.data))
        return chunk


def _respond(
    start_response: StartResponse, status: str, body: bytes, content_type: str
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
