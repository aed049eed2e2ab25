"""`renkei serve` as a real process on 127.0.0.1: health, OpenAPI and the validate endpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FINDING_KEYS

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "messages"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path_factory.mktemp("hub-data"))}
    renkei = Path(sys.executable).with_name("renkei")
    process = subprocess.Popen(
        [str(renkei), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-samples"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def _post(base: str, body: bytes, content_type: str = "application/xml") -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/validate", content=body, headers={"Content-Type": content_type}, timeout=10
    )


def test_healthz(hub: str) -> None:
    response = httpx.get(f"{hub}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_lists_full_api_paths(hub: str) -> None:
    spec = httpx.get(f"{hub}/openapi.json").json()
    assert "/api/v1/validate" in spec["paths"]
    assert "/healthz" in spec["paths"]


def test_valid_sample_is_valid(hub: str) -> None:
    sample = next((SAMPLES / "ResidentChangeNotice").glob("valid-*.xml"))
    body = _post(hub, sample.read_bytes()).json()
    assert body["valid"] is True, body["findings"]
    assert body["service"] == "ResidentChangeNotice"
    assert body["message_id"]


def test_invalid_sample_lists_coded_findings(hub: str) -> None:
    sample = next(SAMPLES.glob("*/invalid-RK-DOM002-*.xml"))
    response = _post(hub, sample.read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    finding = next(f for f in body["findings"] if f["code"] == "RK-DOM002")
    assert finding["name_ja"] == "個人番号"
    assert finding["message_ja"] and finding["message_en"]
    assert set(finding) >= set(FINDING_KEYS)


def test_same_answer_as_the_cli(hub: str) -> None:
    sample = next(SAMPLES.glob("*/invalid-RK-XSD001-*.xml"))
    http_codes = [f["code"] for f in _post(hub, sample.read_bytes()).json()["findings"]]
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("renkei")), "validate", "--json", str(sample)],
        capture_output=True,
        text=True,
        check=False,
    )
    cli_codes = [f["code"] for f in json.loads(cli.stdout)[0]["findings"]]
    assert http_codes == cli_codes
    assert "RK-XSD001" in http_codes


def test_wrong_media_type_is_problem_json(hub: str) -> None:
    response = _post(hub, b"hello", content_type="text/plain")
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["findings"][0]["code"] == "RK-API001"


def test_oversize_is_refused_before_reading(hub: str) -> None:
    body = b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>"
    response = _post(hub, body)
    assert response.status_code == 413
    assert response.json()["findings"][0]["code"] == "RK-SEC002"


def test_hostile_xml_is_refused_with_a_code(hub: str) -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
    findings = _post(hub, body).json()["findings"]
    assert [f["code"] for f in findings] == ["RK-SEC001"]


def test_openapi_documents_the_xml_request_body(hub: str) -> None:
    operation = httpx.get(f"{hub}/openapi.json").json()["paths"]["/api/v1/validate"]["post"]
    assert "application/xml" in operation["requestBody"]["content"]
    assert {"200", "413", "415"} <= set(operation["responses"])
