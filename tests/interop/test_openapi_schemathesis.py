"""schemathesis generates requests from the hub's own OpenAPI document (/openapi.json) and
sends them to the running server: no server error, and every answer is one the document
declares (status, content type, body schema).

Driven through hypothesis directly: schemathesis' pytest plugin does not run on pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.hub_server import HubServer

pytestmark = pytest.mark.interop

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_no_server_errors_and_answers_as_documented(interop_hub: HubServer) -> None:
    schema = schemathesis.openapi.from_url(f"{interop_hub.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {operation.path for operation in operations}
    assert {"/api/v1/messages/{service}", "/api/v1/messages/{message_id}"} <= paths
    seen: set[tuple[str, int]] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,  # the same examples in every run: CI never flakes on luck
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call_and_validate(checks=CHECKS, timeout=30)
            seen.add((case.operation.label, response.status_code))

        exercise()
    # the requests really reached the hub: refusals and acceptances alike
    assert len({label for label, _ in seen}) == len(operations), seen
    assert any(400 <= status < 500 for _, status in seen), seen
