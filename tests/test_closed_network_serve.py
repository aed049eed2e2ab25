"""``renkei serve`` on a machine with no route out at all, as on LGWAN: a network namespace of
its own (``unshare --net``, loopback only) holds the hub, its sample systems (spyne SOAP and
REST) and ``renkei demo``. The machine-wide proxy points at a dead port and ``NO_PROXY`` names
the LAN, the setting docs/operations.md (閉域網) asks for. Every delivery, the inquiry and the
files of ``/docs`` and ``/redoc`` must work without anything from outside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SAMPLE_CONFIG_DIR

pytestmark = [pytest.mark.interop, pytest.mark.slow]
RENKEI = Path(sys.executable).with_name("renkei")
ROOT = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing answers
PORT = 18080  # the namespace has its own ports: none is taken by anything else

# Run inside the namespace: serve, demo, the doc pages' files; prints one JSON line.
_INSIDE = f"""
import json, subprocess, sys, time, urllib.request
hub = "http://127.0.0.1:{PORT}"
def get(path):
    try:
        with urllib.request.urlopen(hub + path, timeout=5) as answer:
            return answer.status
    except OSError:
        return 0
serve = subprocess.Popen([{str(RENKEI)!r}, "serve", "--port", "{PORT}", "--samples"],
                         stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], "wb"))
try:
    deadline = time.monotonic() + 60
    while get("/healthz") != 200 and time.monotonic() < deadline and serve.poll() is None:
        time.sleep(0.2)
    demo = subprocess.run([{str(RENKEI)!r}, "demo", "--url", hub, "--wait", "20"],
                          capture_output=True, text=True, timeout=60)
    files = ["/docs", "/redoc", "/docs/files/swagger-ui-bundle.js",
             "/docs/files/swagger-ui.css", "/docs/files/redoc.standalone.js"]
    print(json.dumps({{"demo": demo.returncode, "out": demo.stdout + demo.stderr,
                      "files": {{path: get(path) for path in files}}}}))
finally:
    serve.terminate()
    serve.wait(timeout=20)
"""


def _no_route_out() -> list[str]:
    """The command prefix of a new network namespace with loopback up, or skip."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip not installed")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def test_serve_delivers_and_answers_with_no_route_out(tmp_path: Path) -> None:
    prefix = _no_route_out()
    shutil.copytree(SAMPLE_CONFIG_DIR, tmp_path / "config")
    environment = {
        **{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(tmp_path / "config"),
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "http_proxy": DEAD_PROXY,
        "https_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost,::1",
    }
    environment.pop("RENKEI_DATABASE_URL", None)
    log = tmp_path / "serve.log"
    command = [*prefix, sys.executable, "-c", _INSIDE, str(log)]
    run = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, timeout=150)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    verdict = json.loads(run.stdout.decode().strip().splitlines()[-1])
    lines = verdict["out"].splitlines()
    assert verdict["demo"] == 0, verdict["out"] + log.read_text(errors="replace")[-3000:]
    for system in ("kokuho", "kotei", "shuno", "tainou", "zeimu"):  # SOAP and REST
        assert any(line.split()[:2] == ["delivered", system] for line in lines), verdict["out"]
    assert any(line.strip().startswith("answered   reply") for line in lines), verdict["out"]
    assert set(verdict["files"].values()) == {200}, verdict["files"]
