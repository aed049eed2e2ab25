"""Years of audit checkpoints outlive their signing key: after the key is replaced, each key
must verify its own period with the anchor directory, as docs/audit.md says
(``--key old.pem.pub --to <rotation>``, ``--key new.pem.pub --from <rotation>``).

The anchor files were checked whatever the period, so the old key failed on the files the new
key had signed (RK-AUD003) and no verification with ``--anchor`` could pass any more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bus.settings import Settings
from bus.store.audit import append_audit
from bus.store.db import open_store
from tests.support.receivers import SAMPLE_CONFIG_DIR

RENKEI = str(Path(sys.executable).with_name("renkei"))


def _renkei(tmp: Path, *args: str, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
        "RENKEI_AUDIT_ANCHOR_DIR": str(tmp / "anchor"),
    }
    env.pop("RENKEI_DATABASE_URL", None)
    if key is not None:
        env["RENKEI_AUDIT_SIGNING_KEY"] = str(key)
    return subprocess.run([RENKEI, *args], env=env, capture_output=True, text=True, timeout=120)


def _append(tmp: Path, count: int) -> None:
    store = open_store(Settings(data_dir=tmp / "data"))
    try:
        with store.sessions.begin() as session:
            for number in range(count):
                append_audit(session, tenant="414247", event="stored", detail={"n": number})
    finally:
        store.close()


def test_each_signing_key_verifies_its_own_period_with_the_anchor(tmp_path: Path) -> None:
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    assert _renkei(tmp_path, "audit", "keygen", "--out", str(old)).returncode == 0
    _append(tmp_path, 3)
    assert _renkei(tmp_path, "audit", "checkpoint", key=old).returncode == 0
    time.sleep(0.01)
    rotation = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    assert _renkei(tmp_path, "audit", "keygen", "--out", str(new)).returncode == 0
    _append(tmp_path, 2)
    assert _renkei(tmp_path, "audit", "checkpoint", key=new).returncode == 0
    anchor = ("--anchor", str(tmp_path / "anchor"))
    before = ("audit", "verify", "--key", f"{old}.pub", "--to", rotation, *anchor)
    after = ("audit", "verify", "--key", f"{new}.pub", "--from", rotation, *anchor)
    for command in (before, after):
        result = _renkei(tmp_path, *command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    # the old key still finds a forged file in its own period
    forged = sorted((tmp_path / "anchor" / "414247").iterdir())[0]
    forged.chmod(0o644)
    forged.write_text(forged.read_text().replace('"seq": 3', '"seq": 2'))
    assert _renkei(tmp_path, *before).returncode == 1
