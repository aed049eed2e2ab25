"""``renkei config check`` warns, before the apply, of what ``config apply`` of the same
directory would warn about: a system whose endpoint, transport or mapping changes while it
has pending or dead-lettered deliveries (RK-OPS028, RK-OPS027 when paused). It reads the
store as it is and never writes to it, creates it nor migrates it (docs/operations.md
「接続先システムの更改」)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.config.snapshots import latest_version
from bus.dispatch import operations
from bus.settings import Settings
from bus.store.db import Store, open_store
from tests.support.receivers import config_dir_for
from tests.test_system_cutover import _cli, _ingest, _new_config


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_store(
    request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """The embedded store, or a PostgreSQL one that the CLI in this process uses too."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    if url is not None:
        monkeypatch.setenv("RENKEI_DATABASE_URL", url)
    opened = open_store(Settings(data_dir=data_dir, database_url=url))
    yield opened
    opened.close()


def _check(directory: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["config", "check", str(directory)])
    return result.exit_code, result.stderr


def test_check_warns_as_the_apply_would_and_writes_nothing(
    tmp_path: Path, data_dir: Path, hub_store: Store
) -> None:
    config = config_dir_for(tmp_path, {"kokuho": 9})
    _cli("config", "apply", str(config))
    _ingest(hub_store, "A", 1)  # one pending delivery to kokuho
    new = _new_config(tmp_path, config, "http://127.0.0.1:18701/kokuho")
    version = latest_version(hub_store.sessions)

    code, stderr = _check(new)
    assert code == 0
    assert "RK-OPS028" in stderr and "RK-OPS027" not in stderr
    assert "Its 1 pending deliveries" in stderr and "endpoint url" in stderr
    assert "127.0.0.1:18701" not in stderr  # a URL is never shown
    assert latest_version(hub_store.sessions) == version  # nothing applied

    with hub_store.sessions.begin() as session:
        operations.pause(session, "kokuho", reason="更改", actor="test")
    code, stderr = _check(new)
    assert code == 0 and "RK-OPS027" in stderr and "RK-OPS028" not in stderr
    assert latest_version(hub_store.sessions) == version

    code, stderr = _check(config)  # the version in force itself: nothing changes
    assert code == 0 and "RK-OPS02" not in stderr
    embedded = hub_store.engine.dialect.name == "sqlite"
    assert (data_dir / "renkei.db").exists() == embedded  # the CLI used the same store


def test_check_without_a_store_creates_none(tmp_path: Path, data_dir: Path) -> None:
    config = config_dir_for(tmp_path, {"kokuho": 9})
    code, stderr = _check(config)
    assert code == 0 and "RK-OPS02" not in stderr
    assert not data_dir.exists()  # no store file (nor its directory) made just to check

    data_dir.mkdir()
    (data_dir / "renkei.db").touch()  # an empty database: not migrated by a check
    code, _ = _check(config)
    assert code == 0 and (data_dir / "renkei.db").stat().st_size == 0


def test_check_of_an_invalid_directory_still_exits_1(
    tmp_path: Path, data_dir: Path, hub_store: Store
) -> None:
    config = config_dir_for(tmp_path, {"kokuho": 9})
    _cli("config", "apply", str(config))
    (config / "systems.yaml").write_text("systems: [\n", encoding="utf-8")
    code, _ = _check(config)
    assert code == 1
