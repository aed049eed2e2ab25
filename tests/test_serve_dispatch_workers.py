"""Where ``renkei serve --http-workers N`` runs its dispatch workers on the embedded store:
by default in one dispatch process of their own beside the HTTP processes (one worker, or
``RENKEI_DISPATCH_WORKERS``); with ``--dispatch-processes 0`` in each HTTP process (one
each: several processes' workers contend for the same deliveries and write turn)."""

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


def _lines(log: Path, event: str) -> list[dict[str, object]]:
    """The ``event`` lines written so far."""
    found = []
    for text in log.read_text(encoding="utf-8").splitlines():
        if f'"{event}"' in text:
            found.append(json.loads(text))
    return found


# Each case starts `renkei serve` with two HTTP processes (~5-10 s). By default: a configured
# count carried into the dispatch process (the default placement), and the default of one
# worker in each HTTP process with `--dispatch-processes 0` (serve's override); the default
# count in a dispatch process and a configured count kept in the HTTP processes are `slow`.
@pytest.mark.parametrize(
    ("options", "configured", "in_http", "dispatch_processes"),
    [
        pytest.param((), None, 0, [1], marks=pytest.mark.slow),
        ((), "3", 0, [3]),
        (("--dispatch-processes", "0"), None, 1, []),
        pytest.param(("--dispatch-processes", "0"), "3", 3, [], marks=pytest.mark.slow),
    ],
)
def test_where_the_dispatch_workers_run(
    tmp_path: Path,
    options: tuple[str, ...],
    configured: str | None,
    in_http: int,
    dispatch_processes: list[int],
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
    command = [RENKEI, "serve", "--port", str(port), "--http-workers", str(PROCESSES), *options]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--no-samples"], env=environment, stderr=log, start_new_session=True
        )
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{port}"), timeout=60)
            wait_for(lambda: len(_lines(log_path, "hub.ready")) == PROCESSES, timeout=30)
            wait_for(
                lambda: len(_lines(log_path, "dispatch.process_ready")) == len(dispatch_processes),
                timeout=30,
            )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    ready = _lines(log_path, "hub.ready")
    assert [line["dispatch_workers"] for line in ready] == [in_http] * PROCESSES
    assert {line["store"] for line in ready} == {"SQLite"}
    started = _lines(log_path, "dispatch.process_ready")
    assert [line["workers"] for line in started] == dispatch_processes
