"""The README's quick start: exactly two commands; CI runs the second one verbatim.

The slow test runs both from a fresh clone in a new directory, as a new user would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_exactly_two_commands() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert commands[0].endswith("renkei serve")
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert quickstart_commands()[1] in ci.splitlines()
    assert "RENKEI_REQUIRE_SERVICES=1" in ci


@pytest.mark.slow
def test_both_commands_work_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "renkei"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    serve, run_tests = quickstart_commands()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    server = subprocess.Popen(serve, shell=True, cwd=clone, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert server.poll() is None, "renkei serve exited"
            try:
                if httpx.get("http://127.0.0.1:8080/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("the hub did not answer /healthz within 10 minutes")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    shutil.rmtree(clone / ".venv")
    result = subprocess.run(
        run_tests, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
