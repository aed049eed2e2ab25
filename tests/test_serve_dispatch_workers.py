"""How many dispatch workers each process of ``renkei serve --http-workers N`` runs on the
embedded store: one each by default (several processes' workers contend for the same
deliveries and write turn), ``RENKEI_DISPATCH_WORKERS`` when it is set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bus.observability.metrics import MULTIPROC_ENV
from bus.settings import DISPATCH_WORKERS_ENV
from tests.support.receivers import SAMPLE_CONFIG_DIR, answers, free_port, wait_for

RENKEI = str(Path(sys.executable).parent / "renkei")
PROCESSES = 2


def _ready_lines(log: Path) -> list[dict[str, object]]:
    """The ``hub.ready`` lines written so far (each process logs one when it has started)."""
    ready = []
    for text in log.read_text(encoding="utf-8").splitlines():
        if '"hub.ready"' in text:
            ready.append(json.loads(text))
    return ready


@pytest.mark.parametrize(("configured", "expected"), [(None, 1), ("3", 3)])
def test_each_process_runs_one_dispatch_worker_unless_told(
    tmp_path: Path, configured: str | None, expected: int
) -> None:
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if k not in (MULTIPROC_ENV, DISPATCH_WORKERS_ENV)},
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
    }
    environment.pop("RENKEI_DATABASE_URL", None)  # the embedded store
    if configured is not None:
        environment[DISPATCH_WORKERS_ENV] = configured
    log_path = tmp_path / "serve.log"
    command = [RENKEI, "serve", "--port", str(port), "--http-workers", str(PROCESSES)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--no-samples"], env=environment, stderr=log, start_new_session=True
        )
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{port}"), timeout=60)
            wait_for(lambda: len(_ready_lines(log_path)) == PROCESSES, timeout=30)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    ready = _ready_lines(log_path)
    assert [line["dispatch_workers"] for line in ready] == [expected] * PROCESSES
    assert {line["store"] for line in ready} == {"SQLite"}
