"""``POST /api/v1/messages/{Service}`` and ``GET /api/v1/messages/{id}``: the hub over REST.

A message is the platform XML or its JSON form (adapters/rest/json_form.py); the JSON form is
written as the same XML and both go through the one pipeline (:meth:`bus.hub.Hub.ingest`).
A notification is answered 202 once stored; an inquiry synchronously with its provider's
reply. The answer's form is negotiated (adapters/rest/negotiation.py), for the status GET
too: JSON and ``application/problem+json`` by default, XML (``rks:Acknowledgement``, the
reply's ``PlatformMessage``, ``rks:MessageStatus``) and ``application/problem+xml`` when the
caller prefers XML, 406 when it accepts neither. A POST refused before the pipeline is
audited after its answer (adapters/inbound.py, ``audited_refusal``). The SOAP form of a
message obeys SOAP's own header rules, as on ``/soap/`` (adapters/soap/headers.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from lxml import etree
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapters.inbound import (
    Caller,
    RefusedHead,
    audited_refusal,
    identify,
    ingest,
    internal_error,
    known_service,
    read_request_body,
    screen,
    unknown_service,
)
from adapters.rest.json_form import JsonFormError, parse, to_json, to_xml
from adapters.rest.negotiation import DEFAULT, Choice, negotiate
from adapters.rest.problem import ProblemRouter, problem, problem_responses
from adapters.rest.validate import XML_MEDIA_TYPES
from adapters.soap import envelope as soap_envelope
from adapters.soap.headers import PIPELINE_REFUSALS, soap_rules
from bus.errors import make_finding
from bus.hub import Hub
from bus.pipeline import Finding, Message, Severity, UsernameToken
from bus.store.queries import MessageDetail, StoreQueryError, show_message
from bus.store.write_health import is_store_unavailable, write_health
from bus.validation.http_body import charset_refusal
from bus.validation.secure_parse import ParseResult
from bus.validation.validator import normalised_id

JSON_MEDIA_TYPE = "application/json"
XML_RESPONSE_TYPE = "application/xml"
PREFIX = "/api/v1/messages"
_RKS = f"{{{soap_envelope.NS_SOAP_BINDING}}}"

# Declares the API key in the OpenAPI document only: adapters/inbound.py identifies the
# caller. Optional (`{}` in each operation's `security`): without the header, the source
# address is checked against the system's allow_addresses.
API_KEY = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="rk_<system>_<key id>.<secret>",
    description=(
        "`Authorization: Bearer <API key>`, issued with `renkei keys new --system ID` "
        "(docs/security.md). Without the header the source address is checked against the "
        "system's `allow_addresses`. A wrong key is 401 (RK-AUT001), never retried by address."
    ),
    auto_error=False,
)
# Appended to the key's requirement; the feeds (adapters/rest/feeds.py) use both too.
KEY_OR_ADDRESS: dict[str, Any] = {"security": [{}]}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the same message again (a resend is safe)",
        "schema": {"type": "integer"},
    }
}

router = ProblemRouter(prefix=PREFIX, tags=["messages"], dependencies=[Security(API_KEY)])


class Accepted(BaseModel):
    """A notification stored (and so acknowledged); it is delivered asynchronously."""

    message_id: str
    stored_at: datetime
    duplicate: bool = Field(
        description=(
            "true for a resend of a message already stored (same messageId, same content: "
            "the Idempotent Receiver answers 202 again with the first `stored_at` and stores "
            "nothing); the same messageId with other content is 409 (RK-STO001)"
        )
    )
    destinations: list[str]
    status_url: str = Field(description="`GET` it for the status; also the `Location` header")
    findings: list[Finding]


class InquiryAnswer(BaseModel):
    """An inquiry answered by its provider: the reply has its own message id, and its
    correlation id is the inquiry's."""

    message_id: str
    reply_message_id: str
    correlation_id: str
    reply: dict[str, Any]
    findings: list[Finding]


class DeliveryStatus(BaseModel):
    destination: str
    state: str
    attempts: int
    next_attempt_at: datetime
    finished_at: datetime | None
    last_error: str | None


class MessageStatus(BaseModel):
    message_id: str
    tenant: str
    system: str
    service: str
    kind: str
    status: str
    received_at: datetime
    correlation_id: str | None
    relates_to: str | None
    deliveries: list[DeliveryStatus]


_JSON_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "The JSON form: `Header` and the service element, keyed by element local names "
        '(catalogue ids); leaves with attributes as `{"$": text, "@iso": …}`; repeats as '
        "arrays. A text item (a code, 宛名番号, 個人番号…) is a JSON string: a number there is "
        "400 RK-API016; a key twice in one object 400 RK-API015. See docs/adapters.md."
    ),
    "properties": {"Header": {"type": "object"}},
    "required": ["Header"],
}


def _as_xml(raw: bytes, media_type: str) -> bytes | Finding:
    """The platform XML to ingest: as sent, or written from the JSON form."""
    if media_type in XML_MEDIA_TYPES:
        return raw
    try:
        return to_xml(parse(raw))
    except JsonFormError as error:
        return error.finding()
    except RecursionError:  # deeper than the parser goes; to_xml stops far sooner
        return JsonFormError("/", "nested too deep", "入れ子が深すぎます").finding()
    except ValueError as error:  # anything else the JSON cannot be written as
        return make_finding("RK-API004", path="/", actual=f"not JSON: {type(error).__name__}")


def _findings(message: Message) -> list[dict[str, Any]]:
    return [f.as_dict() for f in message.findings if f.severity is not Severity.ERROR]


def _xml(element: etree._Element, choice: Choice, status: int = 200, **headers: str) -> Response:
    body = etree.tostring(element, encoding="UTF-8", xml_declaration=True)
    return Response(body, status_code=status, media_type=choice.media_type, headers=headers)


def _refused(
    request: Request,
    refusal: Finding,
    choice: Choice,
    service: str | None,
    raw: bytes | None = None,
) -> Response:
    """The problem document of a POST refused before the pipeline, audited after it is sent."""
    answer = problem([refusal], xml=choice.xml)
    return audited_refusal(request, answer, refusal, adapter="rest", service=service, raw=raw)


def _answer(choice: Choice, message: Message) -> Response:
    if message.rejected:
        return problem(message.findings, xml=choice.xml)
    reply, envelope = message.reply, message.envelope
    if reply is not None and reply.document is not None and reply.envelope and envelope:
        if choice.xml:
            return _xml(reply.document, choice)
        return JSONResponse(
            {
                "message_id": envelope.message_id,
                "reply_message_id": reply.envelope.message_id,
                "correlation_id": reply.envelope.correlation_id,
                "reply": to_json(reply.document),
                "findings": _findings(message),
            }
        )
    ack = message.ack
    if ack is None:  # accepted but neither stored nor answered: a pipeline defect
        defect = internal_error(RuntimeError("accepted message without ack"))
        return problem([defect], xml=choice.xml)
    status_url = f"{PREFIX}/{ack.message_id}"
    if choice.xml:
        warnings = [f for f in message.findings if f.severity is not Severity.ERROR]
        element = soap_envelope.acknowledgement_element(ack, warnings)
        return _xml(element, choice, 202, Location=status_url)
    return JSONResponse(
        {
            "message_id": ack.message_id,
            "stored_at": ack.stored_at.isoformat(),
            "duplicate": ack.duplicate,
            "destinations": list(ack.destinations),
            "status_url": status_url,
            "findings": _findings(message),
        },
        status_code=202,
        headers={"Location": status_url},
    )


@router.post(
    "/{service}",
    summary="Send a platform message (通知・照会の送信)",
    description=(
        "The platform XML (`PlatformMessage` or its SOAP 1.1 form) or its JSON form. "
        "A notification is answered 202 once stored; an inquiry 200 with its provider's reply. "
        "JSON by default; with `Accept: application/xml` (or `text/xml`) the acknowledgement "
        "is `rks:Acknowledgement`, the reply its `PlatformMessage` and an error "
        "`application/problem+xml`; an Accept allowing neither is 406. A gzip body "
        "(`Content-Encoding: gzip`) is decoded within the document limit."
    ),
    status_code=202,
    response_model=Accepted,
    responses={
        200: {
            "model": InquiryAnswer,
            "description": "The inquiry's reply",
            "content": {XML_RESPONSE_TYPE: {"schema": {"type": "string"}}},
        },
        202: {
            "content": {XML_RESPONSE_TYPE: {"schema": {"type": "string"}}},
            "headers": {
                "Location": {
                    "description": "The message's status: `GET /api/v1/messages/{messageId}`",
                    "schema": {"type": "string"},
                }
            },
        },
        **problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 500, 502, 504, xml=True),
        **{
            status: {**answer, "headers": _RETRY_AFTER}
            for status, answer in problem_responses(429, 503, xml=True).items()
        },
        **problem_responses(406),  # nothing acceptable: problem+json
    },
    openapi_extra={
        **KEY_OR_ADDRESS,
        "requestBody": {
            "required": True,
            "content": {
                JSON_MEDIA_TYPE: {"schema": _JSON_FORM_SCHEMA},
                **{media: {"schema": {"type": "string"}} for media in XML_MEDIA_TYPES},
            },
        },
    },
)
async def post_message(service: str, request: Request) -> Response:
    choice = negotiate(request.headers.get("accept"))
    if isinstance(choice, Finding):  # before anything is read or stored
        return _refused(request, choice, DEFAULT, service)
    if not known_service(service):
        return _refused(request, unknown_service(service), choice, None)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in (*XML_MEDIA_TYPES, JSON_MEDIA_TYPE):
        refused = make_finding("RK-API001", path="/", actual=media_type[:64] or "-")
        return _refused(request, refused, choice, service)
    xml_media = media_type in XML_MEDIA_TYPES
    body = await read_request_body(request, platform_xml=xml_media)
    if isinstance(body, Finding):
        return _refused(request, body, choice, service)
    raw = body.head if isinstance(body, RefusedHead) else body
    unreadable = charset_refusal(content_type, raw)
    if unreadable is not None:
        return _refused(request, unreadable, choice, service, raw)
    if isinstance(body, RefusedHead):
        refused_head = await ingest(
            request, raw, adapter="rest", service=service, screened=body.screened
        )
        return _answer(choice, refused_head)
    if not xml_media:
        xml = _as_xml(raw, media_type)
        if isinstance(xml, Finding):
            return _refused(request, xml, choice, service, raw)
        return _answer(choice, await ingest(request, xml, adapter="rest", service=service))
    # the platform XML, possibly in its SOAP form: SOAP's own header rules apply as on /soap/
    screened = await screen(raw)
    rules = soap_rules(screened.root, raw)
    token: UsernameToken | None = None
    if isinstance(rules, Finding):
        if rules.code not in PIPELINE_REFUSALS:  # WS-Security: RK-AUT006/013
            return _refused(request, rules, choice, service, raw)
        screened = ParseResult(None, (rules,))  # the pipeline: authenticated first, audited
    else:
        token = rules
    message = await ingest(
        request, raw, adapter="rest", service=service, username_token=token, screened=screened
    )
    return _answer(choice, message)


def _status(detail: MessageDetail) -> dict[str, Any]:
    summary = detail.summary
    return {
        "message_id": summary.message_id,
        "tenant": summary.tenant,
        "system": summary.system,
        "service": summary.service,
        "kind": summary.kind,
        "status": summary.status.value,
        "received_at": summary.received_at.isoformat(),
        "correlation_id": detail.correlation_id,
        "relates_to": detail.relates_to,
        "deliveries": [
            {
                "destination": d.destination,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at.isoformat(),
                "finished_at": d.finished_at.isoformat() if d.finished_at else None,
                "last_error": d.last_error,
            }
            for d in detail.deliveries
        ],
    }


def _lookup(hub: Hub, caller: Caller, message_id: str, tenant: str | None) -> dict[str, Any]:
    """The status as the caller may see it: only a message it sent or receives, else the
    same RK-STO002 as for a message that does not exist (no existence oracle)."""
    identity = identify(hub, caller, "rest")
    if identity is None:
        raise StoreQueryError(make_finding("RK-AUT001", path="/"))
    with hub.store.sessions() as session:
        return _status(show_message(session, message_id, tenant, parties=identity.systems))


def store_read_failure(hub: Hub, error: Exception) -> Finding:
    """RK-STO008 (503, ``Retry-After``) when the store cannot be reached now, logged once per
    outage without a traceback (bus/store/write_health.py), as for an ingest; else RK-API003."""
    if is_store_unavailable(error):
        write_health(hub.store.engine).unavailable(error)
        return make_finding("RK-STO008", path="/")
    return internal_error(error)


_STATUS_FIELDS = (
    ("messageId", "message_id"),
    ("tenant", "tenant"),
    ("system", "system"),
    ("service", "service"),
    ("kind", "kind"),
    ("status", "status"),
    ("receivedAt", "received_at"),
    ("correlationId", "correlation_id"),
    ("relatesTo", "relates_to"),
)
_DELIVERY_FIELDS = (
    ("destination", "destination"),
    ("state", "state"),
    ("attempts", "attempts"),
    ("nextAttemptAt", "next_attempt_at"),
    ("finishedAt", "finished_at"),
    ("lastError", "last_error"),
)


def _status_element(status: dict[str, Any]) -> etree._Element:
    """``rks:MessageStatus``: the JSON status as XML, in the namespace of ``rks:Acknowledgement``
    (camelCase names as there; a field without a value is left out; one ``rks:delivery``
    per destination)."""
    root = etree.Element(f"{_RKS}MessageStatus", nsmap={"rks": soap_envelope.NS_SOAP_BINDING})
    _fields(root, status, _STATUS_FIELDS)
    for delivery in status["deliveries"]:
        _fields(etree.SubElement(root, f"{_RKS}delivery"), delivery, _DELIVERY_FIELDS)
    return root


def _fields(
    parent: etree._Element, values: dict[str, Any], names: tuple[tuple[str, str], ...]
) -> None:
    for element, key in names:
        value = values[key]
        if value is not None:
            etree.SubElement(parent, f"{_RKS}{element}").text = soap_envelope.xml_text(str(value))


@router.get(
    "/{message_id}",
    summary="A message's status and deliveries (送信状況)",
    description=(
        "JSON by default; with `Accept: application/xml` (or `text/xml`) the status is "
        "`rks:MessageStatus` and an error `application/problem+xml`, as for the POST; an "
        "Accept allowing neither is 406."
    ),
    response_model=MessageStatus,
    responses={
        200: {"content": {XML_RESPONSE_TYPE: {"schema": {"type": "string"}}}},
        **problem_responses(401, 404, 409, 422, 500, xml=True),
        503: {**problem_responses(503, xml=True)[503], "headers": _RETRY_AFTER},
        **problem_responses(406),  # nothing acceptable: problem+json
    },
    openapi_extra=KEY_OR_ADDRESS,
)
async def get_message(message_id: str, request: Request, tenant: str | None = None) -> Response:
    choice = negotiate(request.headers.get("accept"))
    if isinstance(choice, Finding):  # before anything is read
        return problem([choice])
    hub: Hub = request.app.state.hub
    message_id = normalised_id(message_id[:64])  # as stored: a UUID in lowercase
    try:
        status = await run_in_threadpool(_lookup, hub, Caller.of(request), message_id, tenant)
    except StoreQueryError as refusal:
        return problem([refusal.finding], xml=choice.xml)
    except Exception as error:  # the adapter boundary: never a generic 500
        return problem([store_read_failure(hub, error)], xml=choice.xml)
    if choice.xml:
        return _xml(_status_element(status), choice)
    return JSONResponse(status)


__all__ = ["router"]
