"""`renkei serve` with the sample systems, and `renkei demo` against it, as separate processes:
a resident change (住民異動通知) reaches 税 (zeimu, SOAP), 国保 (kokuho, REST) and 滞納管理
(tainou, SOAP), and the demo prints its trace from the Message Store."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import SAMPLE_CONFIG_DIR
from .support.samples_hub import RENKEI, sample_ports_freed, serve_with_samples

pytestmark = pytest.mark.interop


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """A hub with its sample systems on free ports; yields (hub URL, env, system URLs)."""
    config = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, config)
    urls = sample_ports_freed(config / "systems.yaml")
    with serve_with_samples(config, tmp_path) as (url, env, _log):
        yield url, env, urls


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def test_a_resident_change_reaches_tax_nhi_and_delinquency(
    hub: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    url, env, systems = hub
    # a machine-wide proxy (a dead one here) does not carry the demo to a hub on 127.0.0.1
    dead_proxy = "http://127.0.0.1:9"
    proxied = {**env, "HTTP_PROXY": dead_proxy, "http_proxy": dead_proxy, "NO_PROXY": ""}
    demo = subprocess.run(
        [str(RENKEI), "demo", "--url", url, "--wait", "10"],
        env=proxied,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert demo.returncode == 0, (
        demo.stdout + demo.stderr + _tail(Path(env["RENKEI_DATA_DIR"]).parent / "serve.log")
    )
    lines = demo.stdout.splitlines()
    notice_id = lines[0].split()[1]
    assert lines[0].startswith("ResidentChangeNotice ")
    assert lines[1].lstrip().startswith("received")
    assert lines[2].strip() == "routed     → kokuho, kotei, shuno, tainou, zeimu"
    for system in ("zeimu", "kokuho", "tainou"):
        assert any(re.match(rf"\s+delivered\s+{system}\s", line) for line in lines)
        received = _get(f"{systems[system]}/received")
        [row] = [r for r in received if r["message_id"] == notice_id]
        assert row["service"] == "ResidentChangeNotice" and row["tenant"] == "412066"
        # tainou takes its own dialect when its mapping translates (mappings/tainou.yaml)
        fields = row["fields"]
        assert "100000000000008" in (fields.get("addresseeNumber"), fields.get("宛名番号")), row
    assert any(line.strip().startswith("answered   reply") for line in lines)
    # the inquiry was answered by 住民記録 from its own data, which recorded it
    assert any(r["service"] == "AddresseeInquiry" for r in _get(f"{systems['juki']}/received"))
