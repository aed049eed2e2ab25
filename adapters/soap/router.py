"""The inbound SOAP endpoints, ``/soap/{Service}`` (POST; GET ``?wsdl``), and the XSDs the
WSDLs import, ``/schemas/…``.

Plain Starlette routes (no FastAPI request parsing on the hot path): the body's bytes go
straight to :meth:`~bus.hub.Hub.ingest`, whose Validate stage does the one secure parse and
chooses the operation by the Body's element (RK-ENV004 when it is not this endpoint's
service). ``SOAPAction`` is not used to choose: ``""`` (what the WSDL declares) and any other
value are accepted alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from adapters.inbound import (
    RefusedHead,
    audited_refusal,
    ingest,
    internal_error,
    is_server_side,
    known_service,
    read_request_body,
    retry_later,
    screen,
    unknown_service,
)
from adapters.soap import envelope
from adapters.soap.headers import PIPELINE_REFUSALS, faultcode, soap_rules
from adapters.soap.wsdl import render_wsdl
from bus.errors import make_finding
from bus.hub import Hub
from bus.identity import retry_after
from bus.pipeline import Finding, Message, Severity, UsernameToken
from bus.resources import schemas_dir
from bus.validation.http_body import charset_refusal
from bus.validation.secure_parse import ParseResult
from bus.webapp import route_path

SOAP_MEDIA_TYPES = frozenset({"text/xml", "application/soap+xml", "application/xml"})
XML_CONTENT_TYPE = "application/xml; charset=utf-8"
FAULT_STATUS = 500  # SOAP 1.1 §6.2: a Fault travels with HTTP 500
#: A Server fault of a hub that cannot take the message now (store full, credentials not
#: verifiable): 503 with Retry-After, so a load balancer or sender backs off (WS-I BP 1.2
#: allows other 5xx codes with a Fault).
UNAVAILABLE_STATUS = 503
PREFIX = "/soap/"
ALLOWED_METHODS = "GET, HEAD, POST"
_READ_METHODS = frozenset({"GET", "HEAD"})  # HEAD: the GET's headers, no body (the server's)


def _fault(
    findings: list[Finding],
    *,
    faultcode: str = envelope.CLIENT,
    status: int = FAULT_STATUS,
    headers: dict[str, str] | None = None,
) -> Response:
    ordered = sorted(findings, key=lambda f: f.severity is not Severity.ERROR)  # errors first
    body = envelope.fault(ordered, faultcode=faultcode)
    # a rate-limited sender (a Client fault), or a hub that cannot take it now (a Server
    # fault, 503): both say when to send again
    wait = retry_after(ordered) or retry_later(ordered)
    if wait is not None:
        headers = {**(headers or {}), "Retry-After": str(wait)}
    return Response(body, status_code=status, media_type=envelope.CONTENT_TYPE, headers=headers)


def _base_url(request: Request) -> str:
    """The configured public URL, else the address the caller used (Host header)."""
    hub: Hub = request.app.state.hub
    public = hub.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def _answer(message: Message) -> Response:
    if message.rejected:
        server = is_server_side(message.findings)
        code = envelope.SERVER if server else faultcode(message.findings)
        status = UNAVAILABLE_STATUS if retry_later(message.findings) else FAULT_STATUS
        return _fault(message.findings, faultcode=code, status=status)
    if message.reply is not None and message.reply.document is not None:
        body = envelope.reply(message.reply.document)
    elif message.ack is not None:
        body = envelope.acknowledgement(message.ack, _warnings(message))
    else:  # accepted but neither stored nor answered: a pipeline defect, never the caller's
        defect = internal_error(RuntimeError("accepted message without ack"))
        return _fault([defect], faultcode=envelope.SERVER)
    return Response(body, media_type=envelope.CONTENT_TYPE)


def _warnings(message: Message) -> list[Finding]:
    return [f for f in message.findings if f.severity is not Severity.ERROR]


def _refused(
    request: Request,
    refusal: Finding,
    service: str | None,
    raw: bytes | None = None,
    status: int = FAULT_STATUS,
) -> Response:
    """The Client Fault of a POST refused before the pipeline, audited after it is sent."""
    answer = _fault([refusal], status=status)
    return audited_refusal(request, answer, refusal, adapter="soap", service=service, raw=raw)


async def soap_endpoint(request: Request) -> Response:
    service: str = request.path_params["service"]
    if not known_service(service):
        if request.method in _READ_METHODS:
            return _fault([unknown_service(service)], status=404)
        return _refused(request, unknown_service(service), None, status=404)
    if request.method in _READ_METHODS:
        if "wsdl" not in request.query_params:
            return _not_allowed(request, service)
        return Response(render_wsdl(service, _base_url(request)), media_type=XML_CONTENT_TYPE)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in SOAP_MEDIA_TYPES:
        unsupported = make_finding("RK-API001", path="/", actual=media_type[:64] or "-")
        return _refused(request, unsupported, service)
    body = await read_request_body(request, platform_xml=True)
    if isinstance(body, Finding):
        return _refused(request, body, service)
    raw = body.head if isinstance(body, RefusedHead) else body
    unreadable = charset_refusal(content_type, raw)
    if unreadable is not None:
        return _refused(request, unreadable, service, raw)
    screened = body.screened if isinstance(body, RefusedHead) else await screen(raw)
    rules = soap_rules(screened.root, raw)
    token: UsernameToken | None = None
    if isinstance(rules, Finding):
        if rules.code not in PIPELINE_REFUSALS:
            return _refused(request, rules, service, raw)  # WS-Security: RK-AUT006/013
        screened = ParseResult(None, (rules,))  # the pipeline: authenticated first, audited
    else:
        token = rules
    return _answer(
        await ingest(
            request, raw, adapter="soap", service=service, username_token=token, screened=screened
        )
    )


def _not_allowed(request: Request, service: str) -> Response:
    """RK-API005 (405): this URL takes SOAP POSTs; the finding says where the WSDL is."""
    wsdl_url = f"{_base_url(request)}/soap/{service}?wsdl"
    finding = make_finding("RK-API005", path="/", expected=wsdl_url)
    return _fault([finding], status=405, headers={"Allow": ALLOWED_METHODS})


class SoapRouter(APIRouter):
    """The SOAP routes; the framework's own refusals under ``/soap/`` (no such path, a method
    the endpoint does not take) are Client Faults too (bus/webapp.py asks)."""

    def answer_http_error(
        self, request: Request, status: int, headers: Mapping[str, str] | None, detail: str
    ) -> Response | None:
        path = route_path(request.scope)
        if not path.startswith(PREFIX) or status not in (404, 405):
            return None
        service = path[len(PREFIX) :]
        if status == 405 and known_service(service):
            return _not_allowed(request, service)
        return _fault([unknown_service(service or "-")], status=404)


router = SoapRouter()


@cache
def _schema_files() -> dict[str, bytes]:
    """Every XSD under schemas/, by its path there (read once)."""
    root = schemas_dir()
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*.xsd")}


async def schema_file(request: Request) -> Response:
    content = _schema_files().get(request.path_params["path"])
    if content is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(content, media_type=XML_CONTENT_TYPE)


router.add_route("/soap/{service}", soap_endpoint, methods=["GET", "POST"], include_in_schema=False)
router.add_route("/schemas/{path:path}", schema_file, methods=["GET"], include_in_schema=False)
