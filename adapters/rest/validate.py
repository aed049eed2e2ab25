"""``POST /api/v1/validate``: the validator over HTTP, the same code as ``renkei validate``."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapters.inbound import read_body
from adapters.rest.problem import PROBLEM_JSON, ProblemRouter, problem, problem_responses
from bus.errors import make_finding
from bus.pipeline import Finding
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
        "`valid` is false when any has severity error. Warnings do not make it invalid."
    ),
    responses={
        413: {"description": "Larger than the document limit", "content": {PROBLEM_JSON: {}}},
        415: {"description": "Not an XML media type", "content": {PROBLEM_JSON: {}}},
        **problem_responses(422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string"}} for media in XML_MEDIA_TYPES},
        }
    },
)
async def validate(
    request: Request, content_type: Annotated[str | None, Header()] = None
) -> Response:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in XML_MEDIA_TYPES:
        return problem([make_finding("RK-API001", path="/", actual=media_type or "-")])
    validator = _validator()
    body = await read_body(request, validator.options.limits.max_bytes)
    if isinstance(body, Finding):
        return problem([body])
    report = await run_in_threadpool(validator.validate, body)
    return JSONResponse(report_body(report))
