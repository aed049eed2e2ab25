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
from bus.store.db import (
    SCHEMA_HEAD,
    create_store_engine,
    migrate,
    migration_heads,
    schema_version,
)
from bus.store.models import Base


def test_exactly_one_migration_head_and_the_store_knows_it() -> None:
    heads = migration_heads()
    assert len(heads) == 1, heads
    assert heads == [SCHEMA_HEAD], "a new migration: set SCHEMA_HEAD in bus/store/db.py to it"


def test_models_match_the_migrations(store_settings: Settings) -> None:
    engine = create_store_engine(store_settings)
    try:
        migrate(engine)
        migrate(engine)  # idempotent
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
        assert "alembic_version" in inspect(engine).get_table_names()
        assert schema_version(engine) == SCHEMA_HEAD
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


def test_sqlite_message_keys_are_never_reused_after_the_upgrade(tmp_path: Path) -> None:
    """0005 rebuilds ``messages`` with AUTOINCREMENT: existing messages keep their keys and
    their deliveries (foreign keys are off while the table is rebuilt), and keys purged
    before the upgrade (the feed marks) are not handed out again."""
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import delete, insert, select, text

    from bus.store.db import _alembic_config
    from bus.store.models import Delivery, FeedMark, StoredMessage
    from tests.support.store_rows import pending_delivery

    engine = create_store_engine(Settings(data_dir=tmp_path / "data"))
    now = datetime.now(UTC)
    message = {
        "tenant": "412066",
        "system": "houmu",
        "service": "RegistrationNotice",
        "kind": "notification",
        "body": b"<m/>",
        "body_digest": "0" * 64,
        "received_at": now,
    }
    try:
        command.upgrade(_alembic_config(engine), "0004_audit_checkpoints")
        with engine.begin() as connection:
            for pk in (1, 2):
                connection.execute(
                    insert(StoredMessage).values(id=pk, message_id=f"m{pk}", **message)
                )
            connection.execute(insert(Delivery).values(**pending_delivery(2, now)))
            # messages 3-7 were purged (the newest of the store): SQLite would reuse 3
            connection.execute(
                insert(FeedMark).values(
                    tenant="412066", service="RegistrationNotice", purged_through=7
                )
            )
        migrate(engine)
        with engine.begin() as connection:
            schema = connection.scalar(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
            )
            assert "AUTOINCREMENT" in str(schema)
            assert connection.scalar(select(Delivery.message_pk)) == 2  # nothing cascaded
            new = connection.execute(
                insert(StoredMessage).values(message_id="m8", **message)
            ).inserted_primary_key
            assert new is not None and new[0] == 8
            connection.execute(delete(StoredMessage).where(StoredMessage.id == 8))
            again = connection.execute(
                insert(StoredMessage).values(message_id="m9", **message)
            ).inserted_primary_key
            assert again is not None and again[0] == 9
    finally:
        engine.dispose()


def test_a_store_at_the_head_is_opened_without_loading_alembic(tmp_path: Path) -> None:
    """Every process opens the store; one already migrated costs a query, not Alembic's
    ~10 MB and its environment (a fresh interpreter, so nothing imported it before)."""
    probe = (
        "import sys\n"
        "from bus.hub import Hub\n"
        "from bus.settings import Settings\n"
        f"Hub.open(Settings(data_dir={str(tmp_path / 'data')!r})).close()\n"
        "print('alembic' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RENKEI_DATABASE_URL"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert runs == ["True", "False"]  # the first run migrated the empty store
