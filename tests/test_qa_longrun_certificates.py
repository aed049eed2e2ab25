"""A hub runs for years, its TLS certificates do not: ``renkei serve`` must say before the day
one expires (a warning when it starts, a gauge for an alert rule), not only fail every
handshake on that day."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bus.observability.cert_expiry import log_expiries
from tests.support.certificates import Authority
from tests.support.receivers import SAMPLE_CONFIG_DIR, free_port

ROOT = Path(__file__).resolve().parents[1]
GAUGE = "renkei_tls_certificate_expiry_timestamp_seconds"


def test_serve_warns_of_certificates_about_to_expire_and_shows_when(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path, "hub")  # the test PKI's certificates are valid for a day
    server = ca.issue(tmp_path, "server", server=True)
    port, log = free_port(), tmp_path / "serve.log"
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
        "RENKEI_DISPATCH_WORKERS": "0",
        "RENKEI_FOLDER_WATCHER": "false",
    }
    env.pop("RENKEI_DATABASE_URL", None)
    command = [str(Path(sys.executable).with_name("renkei")), "serve", "--no-samples"]
    command += ["--port", str(port), "--tls-cert", str(server.certificate)]
    command += ["--tls-key", str(server.key), "--tls-client-ca", str(ca.path)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, start_new_session=True, stderr=stderr
        )
    context = ssl.create_default_context(cafile=str(ca.path))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                metrics = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=context)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    ends = dict(re.findall(rf'^{GAUGE}{{certificate="(\w+)"}} (\S+)$', metrics.text, re.M))
    expected = ca.certificate.not_valid_after_utc.timestamp()
    assert set(ends) == {"server", "client_ca"}
    assert all(abs(float(value) - expected) < 600 for value in ends.values()), ends
    warnings = [line for line in log.read_text().splitlines() if "RK-OPS014" in line]
    assert len(warnings) == 2, log.read_text()[-3000:]
    assert '"level": "warning"' in warnings[0]


def test_a_certificate_valid_for_long_is_only_noted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Authority.create(tmp_path, "hub")
    caplog.set_level("INFO", logger="bus.observability.cert_expiry")
    log_expiries({"client_ca": ca.path}, now=datetime.now(UTC) - timedelta(days=60))
    assert [record.levelname for record in caplog.records] == ["INFO"]
    log_expiries({"client_ca": ca.path}, now=datetime.now(UTC) + timedelta(days=2))
    assert caplog.records[-1].levelname == "WARNING"
    assert "RK-OPS014" in caplog.records[-1].getMessage()


def test_the_lines_are_structured_events_like_the_hubs_others(tmp_path: Path) -> None:
    """An event name and key/values (the JSON log's fields), not a %-formatted sentence: a
    log shipper alerts on ``code`` and reads ``days_left`` without parsing text."""
    from bus.observability.logs import configure_logging

    ca = Authority.create(tmp_path, "hub")
    end = ca.certificate.not_valid_after_utc
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        log_expiries({"client_ca": ca.path}, now=end - timedelta(days=60))
        log_expiries({"server": ca.path}, now=end - timedelta(days=12))
    finally:
        configure_logging("INFO")  # back to stderr
    valid, expiring = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert valid["event"] == "tls.certificate_valid" and valid["level"] == "info"
    assert valid["certificate"] == "client_ca" and valid["file"] == str(ca.path)
    assert valid["valid_until"] == end.isoformat() and valid["days_left"] == 60
    assert expiring["event"] == "tls.certificate_expiring" and expiring["level"] == "warning"
    assert expiring["code"] == "RK-OPS014" and expiring["certificate"] == "server"
    assert expiring["days_left"] == 12 and expiring["valid_until"] == end.isoformat()
    assert expiring["message"].startswith("The TLS certificate server")
