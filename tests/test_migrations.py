"""The Message Store schema: exactly one Alembic head, and the models match the migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from bus.settings import Settings
from bus.store.db import create_store_engine, migrate, migration_heads
from bus.store.models import Base


def test_exactly_one_migration_head() -> None:
    assert len(migration_heads()) == 1


def test_models_match_the_migrations(store_settings: Settings) -> None:
    engine = create_store_engine(store_settings)
    try:
        migrate(engine)
        migrate(engine)  # idempotent
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
        assert "alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_any_command_on_an_empty_database_migrates_and_loads_the_samples(tmp_path: Path) -> None:
    renkei = str(Path(sys.executable).with_name("renkei"))
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "fresh")}
    env.pop("RENKEI_DATABASE_URL", None)
    result = subprocess.run(
        [renkei, "config", "show"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fresh" / "renkei.db").is_file()
    assert "configuration version 1" in result.stdout
    assert "412066" in result.stdout and "414255" in result.stdout
