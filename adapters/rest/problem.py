"""Errors over HTTP as ``application/problem+json`` (RFC 9457) carrying the coded findings,
and the HTTP status each refusal maps to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, cast

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from lxml import etree
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from adapters.inbound import errors, retry_later
from adapters.soap import envelope
from bus.errors import make_finding
from bus.identity import retry_after
from bus.pipeline import Finding
from bus.webapp import route_path

PROBLEM_JSON = "application/problem+json"
PROBLEM_XML = "application/problem+xml"
PROBLEM_XML_NS = "urn:ietf:rfc:7807"  # RFC 9457 Appendix B
API_PREFIX = "/api/v1"

# The first error's code decides (the pipeline stops at the first refusing stage). Input that
# is not a readable document is 400; a readable one that breaks the rules is 422.
_STATUS_BY_CODE = {
    "RK-AUT001": 401,
    "RK-AUT002": 403,
    "RK-AUT003": 403,
    "RK-AUT004": 403,
    "RK-AUT005": 403,
    "RK-AUT006": 401,
    "RK-AUT007": 401,
    "RK-AUT008": 401,
    "RK-AUT009": 401,
    "RK-AUT010": 429,
    "RK-STO001": 409,
    "RK-STO002": 404,
    "RK-STO003": 409,
    "RK-STO007": 503,
    "RK-STO008": 503,
    "RK-AUT014": 503,
    "RK-SEC002": 413,
    "RK-API001": 415,
    "RK-API002": 404,
    "RK-API003": 500,
    "RK-API004": 400,
    "RK-API006": 404,
    "RK-API007": 405,
    "RK-API008": 422,
    "RK-API009": 415,
    "RK-API010": 400,
    "RK-API011": 415,
    "RK-API012": 400,
    "RK-API013": 406,
    "RK-API014": 400,
    "RK-API015": 400,
    "RK-API016": 400,
    "RK-API017": 503,
    "RK-AUT013": 401,
    "RK-RTE002": 503,
    "RK-RPL001": 504,
    "RK-RPL002": 502,
    "RK-RPL003": 502,
    "RK-RPL004": 503,
}
_UNREADABLE_PREFIX = "RK-SEC"


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    findings: list[Finding]  # the shape of DESIGN §4


def status_for(findings: Sequence[Finding]) -> int:
    first = (errors(findings) or list(findings))[0]
    if first.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[first.code]
    return 400 if first.code.startswith(_UNREADABLE_PREFIX) else 422


def problem(
    findings: Sequence[Finding], status: int | None = None, *, xml: bool = False
) -> Response:
    """The problem document; errors first, then warnings. ``xml``: RFC 9457's XML form
    (``application/problem+xml``) with the findings as ``rks:Findings``, for a caller that
    asked for XML (adapters/rest/negotiation.py)."""
    ordered = errors(findings) + [f for f in findings if f not in errors(findings)]
    first = ordered[0]
    status = status or status_for(ordered)
    wait = retry_after(ordered) or retry_later(ordered)
    if xml:
        return Response(
            _problem_xml(ordered, status),
            status_code=status,
            media_type=PROBLEM_XML,
            headers={"Retry-After": str(wait)} if wait is not None else None,
        )
    return JSONResponse(
        {
            "type": f"urn:renkei:error:{first.code}",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": first.message_en,
            "findings": [finding.as_dict() for finding in ordered],
        },
        status_code=status,
        media_type=PROBLEM_JSON,
        headers={"Retry-After": str(wait)} if wait is not None else None,
    )


def _problem_xml(ordered: Sequence[Finding], status: int) -> bytes:
    first = ordered[0]
    default_namespace = cast(dict[str, str], {None: PROBLEM_XML_NS})  # stubs: str prefixes
    root = etree.Element(f"{{{PROBLEM_XML_NS}}}problem", nsmap=default_namespace)
    for name, value in (
        ("type", f"urn:renkei:error:{first.code}"),
        ("title", HTTPStatus(status).phrase),
        ("status", str(status)),
        ("detail", first.message_en),
    ):
        etree.SubElement(root, f"{{{PROBLEM_XML_NS}}}{name}").text = envelope.xml_text(value)
    envelope.findings_element(root, ordered)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


class ProblemRouter(APIRouter):
    """A router under ``/api/v1`` whose framework refusals (no such path, a method no route
    takes, unreadable parameters) are problem+json with a coded finding, like its own
    (bus/webapp.py asks)."""

    def answer_http_error(
        self, request: Request, status: int, headers: Mapping[str, str] | None, detail: str
    ) -> Response | None:
        path = route_path(request.scope)
        if path != API_PREFIX and not path.startswith(f"{API_PREFIX}/"):
            return None
        finding = _framework_finding(request, status, headers, detail)
        if finding is None:
            return None
        response = problem([finding], status)
        if headers:
            response.headers.update(headers)  # 405's Allow
        return response


def _framework_finding(
    request: Request, status: int, headers: Mapping[str, str] | None, detail: str
) -> Finding | None:
    if status == 404:
        return make_finding("RK-API006", path="/", actual=request.url.path[:128])
    if status == 405:
        allowed = (headers or {}).get("Allow", "-")
        return make_finding("RK-API007", path="/", actual=request.method, expected=allowed)
    if status == 422:
        return make_finding("RK-API008", path="/", actual=detail[:256])
    return None


def _problem_schema() -> dict[str, Any]:
    """Problem's JSON schema, inline (its FindingBody is a component of the routes' models)."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def problem_responses(*statuses: int, xml: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these statuses, problem+json; ``xml``: also
    problem+xml, for a route whose answer is negotiated (adapters/rest/negotiation.py)."""
    schema = _problem_schema()
    content: dict[str, Any] = {PROBLEM_JSON: {"schema": schema}}
    if xml:
        content[PROBLEM_XML] = {"schema": {"type": "string"}}
    return {
        status: {"description": HTTPStatus(status).phrase, "content": dict(content)}
        for status in statuses
    }
