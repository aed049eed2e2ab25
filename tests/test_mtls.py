"""Mutual TLS: ``renkei serve --tls-cert … --tls-client-ca …`` serves HTTPS, verifies client
certificates against the CA and maps a certificate to a system by its SHA-256 fingerprint.
The PKI is made in the test with ``cryptography``; the hub is the real CLI over a socket."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.certificates import Authority, Issued
from tests.support.hub_server import ROOT, sample, serialize
from tests.support.receivers import SAMPLE_CONFIG_DIR, free_port

XML = {"Content-Type": "application/xml"}


@dataclass(frozen=True, slots=True)
class TlsHub:
    url: str
    ca: Path
    mapped: Issued  # juki's certificate
    unmapped: Issued  # same CA, listed for no system
    foreign: Issued  # another CA


def _config(tmp: Path, fingerprint: str) -> Path:
    directory = tmp / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        system["credentials"] = {}  # no loopback allowlist: only certificates identify
    juki = next(s for s in document["systems"] if s["id"] == "juki")
    # the fingerprint as `openssl x509 -fingerprint -sha256` prints it (colons, upper case)
    pretty = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    juki["credentials"] = {"certificate_fingerprints": [pretty]}
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    return directory


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHub]:
    tmp = tmp_path_factory.mktemp("mtls")
    ca, other = Authority.create(tmp, "hub"), Authority.create(tmp, "other")
    server = ca.issue(tmp, "server", server=True)
    mapped, unmapped = ca.issue(tmp, "juki"), ca.issue(tmp, "stranger")
    foreign = other.issue(tmp, "juki")
    port = free_port()
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp / "data"),
        "RENKEI_CONFIG_DIR": str(_config(tmp, mapped.fingerprint)),
        "RENKEI_DISPATCH_WORKERS": "0",
        "RENKEI_FOLDER_WATCHER": "false",
    }
    env.pop("RENKEI_DATABASE_URL", None)
    renkei = str(Path(sys.executable).with_name("renkei"))
    command = [renkei, "serve", "--port", str(port), "--no-samples"]
    command += ["--tls-cert", str(server.certificate), "--tls-key", str(server.key)]
    command += ["--tls-client-ca", str(ca.path)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", verify=_context(ca.path, None), timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield TlsHub(url, ca.path, mapped, unmapped, foreign)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def _context(ca: Path, cert: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert.certificate), str(cert.key))
    return context


def _send(hub: TlsHub, cert: Issued | None) -> httpx.Response:
    with httpx.Client(verify=_context(hub.ca, cert), timeout=30) as client:
        return client.post(
            f"{hub.url}/api/v1/messages/ResidentChangeNotice",
            content=serialize(sample("ResidentChangeNotice")),
            headers=XML,
        )


def test_the_mapped_client_certificate_is_its_system(tls_hub: TlsHub) -> None:
    response = _send(tls_hub, tls_hub.mapped)
    assert response.status_code == 202, response.text
    status = httpx.get(
        f"{tls_hub.url}{response.headers['location']}",
        verify=_context(tls_hub.ca, tls_hub.mapped),
        timeout=30,
    )
    assert status.status_code == 200 and status.json()["system"] == "juki"


@pytest.mark.parametrize("which", ["none", "unmapped"])
def test_no_or_an_unmapped_certificate_is_not_recognised(tls_hub: TlsHub, which: str) -> None:
    response = _send(tls_hub, tls_hub.unmapped if which == "unmapped" else None)
    assert response.status_code == 401
    assert response.json()["findings"][0]["code"] == "RK-AUT001"


def test_a_certificate_from_another_ca_fails_the_handshake(tls_hub: TlsHub) -> None:
    with pytest.raises(httpx.TransportError):
        _send(tls_hub, tls_hub.foreign)


def test_the_console_over_tls_tells_browsers_to_stay_on_https(tls_hub: TlsHub) -> None:
    """Over HTTPS the console's answers carry HSTS (and its cookie is Secure), so a browser
    never falls back to plain HTTP for the operator's session."""
    with httpx.Client(verify=_context(tls_hub.ca, None), timeout=30) as client:
        login = client.get(f"{tls_hub.url}/console/login")
    assert login.status_code == 200
    assert login.headers["strict-transport-security"] == "max-age=31536000"
    assert "secure" in login.headers["set-cookie"].lower()
