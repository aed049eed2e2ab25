"""bus/collector.py: what startup built is frozen and the youngest generation's threshold
raised, in the process that serves (the app's lifespan) — each in a fresh interpreter, so
the test process's own collector is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import gc, json, sys
from bus.collector import tune_collector
before = (gc.get_freeze_count(), gc.get_threshold())
tuned = tune_collector(int(sys.argv[1]))
after = (gc.get_freeze_count(), gc.get_threshold())
print(json.dumps({"tuned": tuned, "before": before, "after": after}))
"""

SERVE = """
import gc, json
from fastapi.testclient import TestClient
from bus.webapp import create_app
with TestClient(create_app()) as client:
    assert client.get("/healthz").status_code == 200
    print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}))
"""


IMPORT = """
import gc, json, sys
from typer.testing import CliRunner
from bus.cli import load_commands
app = load_commands("import")
result = CliRunner().invoke(app, ["import", "notices", sys.argv[1], "--tenant", "412066"])
assert "新規" in result.output, result.output
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}))
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_tuning_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    result = _run(PROBE, "10000")
    before_frozen, before_threshold = result["before"]  # type: ignore[misc]
    after_frozen, after_threshold = result["after"]  # type: ignore[misc]
    assert result["tuned"] is True
    assert before_frozen == 0 and after_frozen > 1000  # the imported modules' objects
    assert after_threshold == [10000, before_threshold[1], before_threshold[2]]


def test_zero_leaves_the_collector_as_python_set_it() -> None:
    result = _run(PROBE, "0")
    assert result["tuned"] is False
    assert result["before"] == result["after"]


def test_the_serving_process_is_tuned_once_the_hub_is_open(tmp_path: Path) -> None:
    env = os.environ | {
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_GC_YOUNG_THRESHOLD": "12345",
        "RENKEI_DISPATCH_WORKERS": "0",
        "RENKEI_FOLDER_WATCHER": "false",
    }
    result = _run(SERVE, env=env)
    assert result["threshold"][0] == 12345  # type: ignore[index]
    assert result["frozen"] > 10_000  # type: ignore[operator]


def test_an_import_is_tuned(tmp_path: Path) -> None:
    env = os.environ | {
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_GC_YOUNG_THRESHOLD": "23456",
    }
    notices = Path(__file__).parent.parent / "samples" / "notices" / "traps-cp932.csv"
    result = _run(IMPORT, str(notices), env=env)
    assert result["threshold"][0] == 23456  # type: ignore[index]
    assert result["frozen"] > 10_000  # type: ignore[operator]
