"""``POST /api/v1/validate``: the validator over HTTP, the same code as ``renkei validate``.

The body is read as the message endpoints read theirs (adapters/inbound.py,
bus/validation/http_body.py): ``Content-Encoding: gzip`` decoded within the document limit,
another coding RK-API009, broken gzip RK-API010, a ``charset`` other than UTF-8 RK-API011 or
RK-API012. Nothing is stored, so nothing is audited.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapters.inbound import LOOP_PARSE_BYTES, read_request_body, reserve_tree
from adapters.rest.problem import ProblemRouter, problem, problem_responses
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.validation.http_body import charset_refusal
from bus.validation.validator import ValidationReport, Validator

XML_MEDIA_TYPES = ("application/xml", "text/xml", "application/soap+xml")

router = ProblemRouter(prefix="/api/v1", tags=["validation"])


class ValidationResult(BaseModel):
    valid: bool
    service: str | None
    message_id: str | None
    findings: list[Finding]


@cache
def _validator() -> Validator:
    return Validator()


def report_body(report: ValidationReport) -> dict[str, Any]:
    return {
        "valid": report.valid,
        "service": report.service,
        "message_id": report.envelope.message_id if report.envelope else None,
        "findings": [finding.as_dict() for finding in report.findings],
    }


@router.post(
    "/validate",
    response_model=ValidationResult,
    summary="Validate a platform message (検証)",
    description=(
        "Send a PlatformMessage (or its SOAP 1.1 form) as XML. The answer lists every finding; "
        "`valid` is false when any has severity error. Warnings do not make it invalid. "
        "A gzip body (`Content-Encoding: gzip`) is decoded within the document limit; another "
        "coding (415), broken gzip (400) or a `charset` other than UTF-8 (415, or 400 when it "
        "contradicts the document's own encoding) is refused. No authentication: nothing is "
        "stored and the caller is not identified (an `Authorization` header is ignored)."
    ),
    responses=problem_responses(400, 413, 415, 422, 503),
    openapi_extra={
        "security": [],  # anyone may validate: nothing is stored, no caller is identified
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string"}} for media in XML_MEDIA_TYPES},
        },
    },
)
async def validate(request: Request) -> Response:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in XML_MEDIA_TYPES:
        return problem([make_finding("RK-API001", path="/", actual=media_type or "-")])
    validator = _validator()
    limit = validator.options.limits.max_bytes
    body = await read_request_body(request, platform_xml=False, limit=limit)
    if isinstance(body, Finding):
        return problem([body])
    assert isinstance(body, bytes)  # only a platform-XML read is judged by its head
    unreadable = charset_refusal(content_type, body)
    if unreadable is not None:
        return problem([unreadable])
    if len(body) <= LOOP_PARSE_BYTES:
        report = await run_in_threadpool(validator.validate, body)
        return JSONResponse(report_body(report))
    reservation = await reserve_tree(body)  # nothing stored, but a tree is built all the same
    if isinstance(reservation, Finding):
        return problem([reservation])
    try:
        report = await run_in_threadpool(validator.validate, body)
    finally:
        reservation.release()
    return JSONResponse(report_body(report))
