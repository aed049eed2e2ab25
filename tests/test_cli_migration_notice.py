"""A command run on a store an older renkei made upgrades it and says so on standard error
(one line, Japanese then English); a store already at the head, or a new one, says nothing.
Through the real ``renkei`` console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic import command

from bus.settings import Settings
from bus.store.db import SCHEMA_HEAD, _alembic_config, create_store_engine, schema_version

RENKEI = Path(sys.executable).with_name("renkei")
OLDER = "0008_soap_password_overlap"


def _config_show(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env["RENKEI_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(RENKEI), "config", "show"], env=env, capture_output=True, text=True, timeout=60
    )


def _store_at(data_dir: Path, revision: str) -> None:
    engine = create_store_engine(Settings(data_dir=data_dir))
    try:
        command.upgrade(_alembic_config(engine), revision)
    finally:
        engine.dispose()


def test_a_command_that_upgrades_the_store_tells_the_operator(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _store_at(data_dir, OLDER)
    upgraded = _config_show(data_dir)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stderr.splitlines() == [
        f"メッセージストアを更新しました（スキーマ {OLDER} → {SCHEMA_HEAD}） "
        f"store schema upgraded from {OLDER} to {SCHEMA_HEAD}"
    ]
    engine = create_store_engine(Settings(data_dir=data_dir))
    try:
        assert schema_version(engine) == SCHEMA_HEAD
    finally:
        engine.dispose()
    again = _config_show(data_dir)  # at the head now: nothing to say
    assert again.returncode == 0 and again.stderr == ""


def test_a_new_store_is_made_without_a_notice(tmp_path: Path) -> None:
    fresh = _config_show(tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "メッセージストアを更新" not in fresh.stderr and "upgraded" not in fresh.stderr
