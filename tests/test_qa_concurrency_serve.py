"""Two operators at once: a second `renkei serve` started by mistake on the data folder of
one already running. It must refuse clearly or work beside it — never disturb it.

It used to open the hub, start its dispatch processes and empty ``<data>/metrics`` (the
running serve's multiprocess counters) before uvicorn found the port taken (its own log line,
exit 3); on another port it emptied that folder too."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.observability.metrics_dir import reset_multiprocess_dir
from tests.support.receivers import free_port, wait_for
from tests.test_qa_concurrency_pause import RENKEI, _levy, _ready


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [RENKEI, "serve", "--no-samples", "--port", str(port), "--http-workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stored(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r"^renkei_messages_stored_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return sum(float(value) for value in found)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    """A serve with 2 HTTP processes and a dispatch process that has stored 3 messages."""
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _serve(env, port)
    try:
        wait_for(lambda: _ready(url), timeout=90)
        with httpx.Client(timeout=30) as client:
            for number in range(3):
                answer = client.post(
                    f"{url}/api/v1/messages/LevyNotice",
                    content=_levy(f"S{number:05d}"),
                    headers={"Content-Type": "application/xml"},
                )
                assert answer.status_code == 202, answer.text
        assert _stored(url) == 3
        yield url, port, env
    finally:
        first.terminate()
        first.wait(60)


def test_a_serve_on_a_taken_port_refuses_with_a_code_before_opening_anything(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "RENKEI_DATA_DIR": str(data)}
    with socket.socket() as taken:  # what a serve already running there holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = subprocess.run(
            [RENKEI, "serve", "--no-samples", "--port", str(port), "--http-workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert second.returncode == 2, second.stderr[-2000:]
    assert "RK-OPS012" in second.stderr and f"127.0.0.1:{port}" in second.stderr
    assert "Traceback" not in second.stderr
    assert not data.exists()  # no store opened, no metrics folder emptied, no worker started


def test_metrics_files_of_a_live_process_are_kept(tmp_path: Path) -> None:
    """What a second serve resets: only the files of processes that are gone."""
    gone = subprocess.Popen(["true"])  # a pid that has just ended
    gone.wait()
    live = tmp_path / f"counter_{os.getpid()}.db"
    dead = tmp_path / f"counter_{gone.pid}.db"
    for path in (live, dead):
        path.write_bytes(b"")
    reset_multiprocess_dir(tmp_path)
    assert live.exists() and not dead.exists()


@pytest.mark.slow  # two serves of three processes each: about a minute on 2 cores
def test_a_second_serve_on_another_port_leaves_the_first_ones_counters(
    running: tuple[str, int, dict[str, str]],
) -> None:
    url, _, env = running
    other = free_port()
    second = _serve(env, other)
    try:
        wait_for(lambda: _ready(f"http://127.0.0.1:{other}"), timeout=90)
        assert _stored(url) == 3
    finally:
        second.terminate()
        second.wait(60)
