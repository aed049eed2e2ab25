"""The hub's ASGI app started by uvicorn on its own (``uvicorn bus.webapp:create_app
--factory``, docs/adapters.md) with a ``RENKEI_*`` value that cannot be used: the same coded
RK-OPS010 line ``renkei serve`` prints, no pydantic traceback, and the server stops (exit 3,
uvicorn's and gunicorn's "worker failed to boot") instead of serving or restarting its
workers without end. Real uvicorn processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.receivers import free_port

UVICORN = Path(sys.executable).with_name("uvicorn")
REFUSAL = (
    "RK-OPS010 環境変数 RENKEI_DISPATCH_WORKERS の値（abc）は使えません。"
    "使える値：0 以上の整数。何も実行していません。 / The environment variable "
    "RENKEI_DISPATCH_WORKERS has a value that cannot be used (abc); allowed: integer >= 0. "
    "Nothing was run."
)


def _uvicorn(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env.update(RENKEI_DATA_DIR=str(data_dir), RENKEI_DISPATCH_WORKERS="abc")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [str(UVICORN), "bus.webapp:create_app", "--factory", "--port", str(free_port()), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_worker_prints_the_coded_line_and_exits_non_zero(tmp_path: Path) -> None:
    done = _uvicorn(tmp_path / "data")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "ValidationError" not in done.stderr
    assert done.stderr.strip().splitlines() == [REFUSAL]
    assert not (tmp_path / "data").exists()  # no store was made


@pytest.mark.slow
def test_several_workers_stop_instead_of_restarting(tmp_path: Path) -> None:
    done = _uvicorn(tmp_path / "data", "--workers", "2")
    assert "Traceback" not in done.stderr and "ValidationError" not in done.stderr
    refusals = [line for line in done.stderr.splitlines() if line.startswith("RK-")]
    assert refusals and set(refusals) == {REFUSAL}
    assert "failed to start, stopping the parent process" in done.stderr
    assert "died" not in done.stderr  # no worker was started again
