"""Recording receivers (samples/systems/recording_receiver.py) as real subprocesses, free
ports, polling waits, and a copy of the sample configuration whose system endpoints point at
receivers on chosen ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = ROOT / "samples" / "systems" / "recording_receiver.py"
SAMPLE_CONFIG_DIR = ROOT / "samples" / "config"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str, path: str = "/healthz") -> bool:
    """Whether the server at ``url`` answers ``GET path`` with 200 (not yet up: False)."""
    try:
        return httpx.get(f"{url}{path}", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(until: Callable[[], bool], timeout: float = 30.0) -> float:
    """Poll ``until`` every 20 ms; fails after ``timeout`` seconds; returns the time taken."""
    start = time.monotonic()
    while not until():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - start


class Receiver:
    """The recording receiver as a subprocess (it can be killed and restarted)."""

    def __init__(self, tmp: Path, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.log = tmp / f"{name}.jsonl"
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.name}"

    def start(self, *args: str) -> Receiver:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(RECEIVER),
                "--port",
                str(self.port),
                "--log",
                str(self.log),
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "listening" in line or "down" in line, line
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        text = self.log.read_text(encoding="utf-8")
        # complete lines only: a long record reaches the file in pieces while it is written
        # (read between two of them, its line is cut short), and it is acknowledged only once
        # the whole line, newline included, is there
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines()]

    def applied(self) -> list[str]:
        return [r["messageId"] for r in self.records() if r["applied"]]


def receiver_factory(tmp_path: Path) -> Iterator[Callable[[str], Receiver]]:
    """A factory of receivers (logs under ``tmp_path``, free ports), stopped afterwards. A
    fixture body: ``receivers = pytest.fixture(receiver_factory, name="receivers")``."""
    started: list[Receiver] = []

    def make(name: str) -> Receiver:
        receiver = Receiver(tmp_path, name)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


def config_dir_for(
    tmp_path: Path,
    ports: dict[str, int],
    *,
    retry: dict[str, Any] | None = None,
    name: str = "config",
) -> Path:
    """Copy samples/config to ``tmp_path / name`` and point each system named in ``ports`` at
    ``127.0.0.1:<port>`` (same path, so the receiver still sees ``/<system>``). ``retry``, when
    given, replaces every system's retry policy (e.g. ``{"base_delay": "PT0.05S", …}``)."""
    directory = tmp_path / name
    shutil.copytree(SAMPLE_CONFIG_DIR, directory, dirs_exist_ok=True)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    known = {system["id"] for system in document["systems"]}
    unknown = set(ports) - known
    assert not unknown, f"no such system in samples/config: {sorted(unknown)}"
    for system in document["systems"]:
        if system["id"] in ports:
            parts = urlsplit(system["endpoint"]["url"])
            netloc = f"{parts.hostname}:{ports[system['id']]}"
            system["endpoint"]["url"] = urlunsplit(parts._replace(netloc=netloc))
            system["endpoint"]["transport"] = "http"  # a recording receiver, not a SOAP sample
        if retry is not None:
            system["retry"] = dict(retry)
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory
