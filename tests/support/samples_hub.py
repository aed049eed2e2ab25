"""`renkei serve --samples` as a separate process on a configuration a test prepared: the
hub and its sample connected systems, on SQLite in a data folder of the test's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.receivers import free_port, wait_for

RENKEI = str(Path(sys.executable).with_name("renkei"))
_SAMPLE_URL = re.compile(r"http://127\.0\.0\.1:(1810\d)/([a-z]+)")


def sample_ports_freed(systems_yaml: Path) -> dict[str, str]:
    """Move each sample system of ``systems_yaml`` (ports 18101–18107) to a free port, in
    place; returns their new URLs by system id."""
    text = systems_yaml.read_text(encoding="utf-8")
    urls: dict[str, str] = {}
    for port, system in _SAMPLE_URL.findall(text):
        new = f"http://127.0.0.1:{free_port()}/{system}"
        text = text.replace(f"http://127.0.0.1:{port}/{system}", new)
        urls[system] = new
    systems_yaml.write_text(text, encoding="utf-8")
    return urls


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@contextmanager
def serve_with_samples(config_dir: Path, work: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The hub on a free port with ``config_dir`` and its data under ``work``; yields its
    URL, the environment it runs in (for CLI commands against it) and its log file."""
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(work / "data"),
        "RENKEI_CONFIG_DIR": str(config_dir),
    }
    env.pop("RENKEI_DATABASE_URL", None)
    env.pop("RENKEI_BROKER_URL", None)
    port = free_port()
    log = work / "serve.log"  # a file, not a pipe: nobody reads a pipe while tests run
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [RENKEI, "serve", "--port", str(port), "--samples"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/healthz") or process.poll() is not None, timeout=20)
        assert process.poll() is None, _tail(log)
        yield url, env, log
        assert process.poll() is None, f"the hub exited ({process.returncode}): {_tail(log)}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
