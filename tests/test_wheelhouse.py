"""Installation for closed networks (LGWAN, 三層分離): the wheelhouse that
docs/operations.md builds with two commands installs into a fresh virtual environment with
pip cut off from every index and proxy, and the installed ``renkei validate`` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "messages" / "ResidentChangeNotice" / "valid-full.xml"
INVALID = ROOT / "samples" / "messages" / "ResidentChangeNotice"
INVALID_SAMPLE = INVALID / "invalid-RK-DOM002-my-number-check-digit.xml"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing answers

pytestmark = [pytest.mark.packaging, pytest.mark.slow]


def _offline_environment() -> dict[str, str]:
    """No pip configuration (no index, no find-links), and any network attempt refused."""
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    environment.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        HTTP_PROXY=CLOSED,
        HTTPS_PROXY=CLOSED,
        http_proxy=CLOSED,
        https_proxy=CLOSED,
        NO_PROXY="",
    )
    environment.pop("VIRTUAL_ENV", None)
    return environment


def test_the_wheelhouse_installs_offline_and_validates(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    # docs/operations.md, on a machine with access to the package registry:
    lock = str(ROOT / "requirements.lock")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--wheel-dir",
            str(wheelhouse),
            "-r",
            lock,
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    files = sorted(p.name for p in wheelhouse.iterdir())
    assert files and all(name.endswith(".whl") for name in files), files  # nothing to build
    assert any(name.startswith("renkei-") for name in files)
    assert any(name.startswith("spyne-") for name in files)  # an sdist on PyPI: built here

    # … and on the closed host:
    venv = tmp_path / "renkei-venv"
    offline = _offline_environment()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=offline)
    pip = str(venv / "bin" / "pip")
    install = subprocess.run(
        [pip, "install", "--no-index", "--find-links", str(wheelhouse), "renkei"],
        capture_output=True,
        text=True,
        env=offline,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    renkei = venv / "bin" / "renkei"
    work = tmp_path / "elsewhere"  # not the checkout: data files come from the wheel
    work.mkdir()
    valid = subprocess.run(
        [str(renkei), "validate", str(SAMPLE)], capture_output=True, text=True, cwd=work
    )
    assert valid.returncode == 0, valid.stdout + valid.stderr
    refused = subprocess.run(
        [str(renkei), "validate", str(INVALID_SAMPLE)], capture_output=True, text=True, cwd=work
    )
    assert refused.returncode != 0 and "RK-DOM002" in refused.stdout + refused.stderr
    # the installed package is the wheel's, not the checkout's
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import bus; print(bus.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        check=True,
    )
    assert str(venv) in where.stdout
