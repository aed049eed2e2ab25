"""Two operators at once: `renkei destinations pause` while a real `renkei serve` is sending
to that system. Nothing may reach a paused system after the pause command has returned.

A worker's round is claimed with the pauses then in force; a pause committed while the round
was being sent used to leave the rest of the round's deliveries to that system going out —
seconds after `paused: shuno` was printed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.support.receivers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
RENKEI = str(Path(sys.executable).with_name("renkei"))
SAMPLE = (ROOT / "samples/messages/LevyNotice/valid-minimal.xml").read_text(encoding="utf-8")
SAMPLE_ID = "cf60a8e6-af41-4aa1-8b5d-096cd928f002"


class Slow(BaseHTTPRequestHandler):
    """Every system: records when each request arrived, answers 200 after ``delay`` s;
    holds every answer while ``gate`` is clear."""

    protocol_version = "HTTP/1.1"
    arrived: ClassVar[list[tuple[float, str]]] = []
    delay = 1.0
    gate = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Slow.arrived.append((time.monotonic(), self.path.strip("/")))
        Slow.gate.wait(60)
        time.sleep(Slow.delay)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def systems() -> Iterator[int]:
    Slow.arrived = []
    Slow.gate = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    Slow.gate.set()
    server.shutdown()
    server.server_close()


def _config(tmp_path: Path, port: int) -> Path:
    """The sample configuration with every system an HTTP endpoint of the local server."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "samples/config", config)
    systems = (config / "systems.yaml").read_text(encoding="utf-8")
    systems = systems.replace("transport: soap", "transport: http")
    systems = re.sub(r"http://127\.0\.0\.1:181\d\d/", f"http://127.0.0.1:{port}/", systems)
    (config / "systems.yaml").write_text(systems, encoding="utf-8")
    return config


def _levy(subject: str) -> bytes:
    """A LevyNotice (routed to shuno and tainou) with its own messageId and subject."""
    body = SAMPLE.replace(SAMPLE_ID, str(uuid.uuid4()))
    return body.replace(
        "<env:issuedAt>", f"<env:subject>{subject}</env:subject><env:issuedAt>"
    ).encode()


@pytest.fixture
def hub(tmp_path: Path, systems: int) -> Iterator[tuple[str, dict[str, str]]]:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(_config(tmp_path, systems)),
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [RENKEI, "serve", "--no-samples", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _ready(url), timeout=60)
        yield url, env
    finally:
        Slow.gate.set()
        serve.terminate()
        serve.wait(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _send(client: httpx.Client, url: str, subject: str) -> None:
    answer = client.post(
        f"{url}/api/v1/messages/LevyNotice",
        content=_levy(subject),
        headers={"Content-Type": "application/xml"},
    )
    assert answer.status_code == 202, answer.text


def test_nothing_reaches_a_system_after_its_pause_returned(
    hub: tuple[str, dict[str, str]],
) -> None:
    url, env = hub
    with httpx.Client(timeout=30) as client:
        _send(client, url, "S00000")  # the first round: held at the receiver
        wait_for(lambda: len(Slow.arrived) >= 2, timeout=30)
        for number in range(1, 41):  # the next round: 40 subjects x 2 systems, 50 claimed
            _send(client, url, f"S{number:05d}")
    Slow.gate.set()
    first = len(Slow.arrived)
    wait_for(lambda: len(Slow.arrived) > first, timeout=30)  # the big round is being sent
    paused = subprocess.run(
        [RENKEI, "destinations", "pause", "shuno", "--reason", "計画停止"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    returned = time.monotonic()
    assert paused.returncode == 0, paused.stderr
    assert "paused: shuno" in paused.stdout
    time.sleep(3)  # a round's worth of 1 s sends on 8 lanes
    late = [at - returned for at, system in Slow.arrived if system == "shuno" and at > returned]
    assert late == [], f"{len(late)} deliveries reached shuno after the pause returned"
    wait_for(lambda: sum(system == "tainou" for _, system in Slow.arrived) == 41, timeout=30)
