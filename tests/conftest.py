"""Shared fixtures. Service-backed tests use :func:`require_service`: they skip with a clear
reason on a machine without the service, and fail loudly when RENKEI_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import socket

import pytest

# The shapes DESIGN §4 fixes (pinned here, independently of the code that produces them).
FINDING_KEYS = [
    "code",
    "severity",
    "path",
    "item",
    "name_ja",
    "rule",
    "value_masked",
    "message_ja",
    "message_en",
]
CATALOGUE_KEYS = [
    "id",
    "name_ja",
    "namespace",
    "kind",
    "xsd_type",
    "length",
    "pattern",
    "code_list",
    "unit",
    "rule",
]

SERVICES = {
    "postgresql": ("127.0.0.1", 5432),
    "rabbitmq": ("127.0.0.1", 5672),
}


def require_service(name: str) -> tuple[str, int]:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=2):
            return host, port
    except OSError as error:
        reason = f"{name} not reachable on {host}:{port} ({error})"
        if os.environ.get("RENKEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RENKEI_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
