"""Migration 0007: the messages' unique key in the order (message_id, tenant, system), without
``ix_messages_message_id`` and ``ix_messages_tenant``. On a populated store, on SQLite and
PostgreSQL, up and down: the messages, their deliveries and keys stay, a key purged before is
not handed out again, and a second message with the same (tenant, system, messageId) is still
refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, delete, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from bus.store.db import _alembic_config, migrate
from bus.store.models import Base, Delivery, IdempotencyKey, StoredMessage
from tests.support.store_rows import pending_delivery

BEFORE = "0006_read_indexes"
NOW = datetime.now(UTC)
BY_TENANT = ["tenant", "system", "message_id"]
BY_MESSAGE_ID = ["message_id", "tenant", "system"]


def store_message(engine: Engine, message_id: str, system: str = "houmu") -> int:
    with engine.begin() as connection:
        inserted = connection.execute(
            insert(StoredMessage).values(
                message_id=message_id,
                tenant="412066",
                system=system,
                service="RegistrationNotice",
                kind="notification",
                body=f"<m id='{message_id}'/>".encode(),
                body_digest="0" * 64,
                received_at=NOW,
            )
        ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def populate(engine: Engine) -> tuple[int, int, list[Any]]:
    """Messages (one messageId sent by two systems), a delivery and an idempotency key of the
    second; the newest message purged. Returns (the second's key, the purged key, the rows)."""
    store_message(engine, "m1")
    second = store_message(engine, "m2")
    store_message(engine, "m1", system="kotei")
    purged = store_message(engine, "m3")
    with engine.begin() as connection:
        connection.execute(insert(Delivery).values(**pending_delivery(second, NOW)))
        connection.execute(
            insert(IdempotencyKey).values(
                tenant="412066",
                system="houmu",
                message_id="m2",
                content_digest="0" * 64,
                message_pk=second,
                created_at=NOW,
            )
        )
        connection.execute(delete(StoredMessage).where(StoredMessage.id == purged))
    return second, purged, stored_rows(engine)


def stored_rows(engine: Engine) -> list[Any]:
    columns = (StoredMessage.id, StoredMessage.message_id, StoredMessage.system)
    with engine.connect() as connection:
        return list(connection.execute(select(*columns, StoredMessage.body).order_by(*columns)))


def unique_keys(engine: Engine, table: str = "messages") -> list[list[str]]:
    return sorted(found["column_names"] for found in inspect(engine).get_unique_constraints(table))


def index_names(engine: Engine) -> set[str]:
    return {str(found["name"]) for found in inspect(engine).get_indexes("messages")}


def assert_kept(engine: Engine, second: int, purged: int, rows: list[Any]) -> None:
    """The rows and their references as they were; the purged key not handed out again; a
    second message with a stored (tenant, system, messageId) refused."""
    assert stored_rows(engine) == rows
    with engine.connect() as connection:
        assert connection.scalar(select(Delivery.message_pk)) == second  # nothing cascaded
        assert connection.scalar(select(IdempotencyKey.message_pk)) == second
    assert store_message(engine, f"new-{purged}") > purged
    with pytest.raises(IntegrityError):
        store_message(engine, "m1", system="kotei")
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            schema = connection.scalar(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
            )
        assert "AUTOINCREMENT" in str(schema)


def test_upgrade_puts_the_message_id_first_and_keeps_the_store(engine: Engine) -> None:
    command.upgrade(_alembic_config(engine), BEFORE)
    second, purged, rows = populate(engine)
    assert unique_keys(engine) == [BY_TENANT]
    migrate(engine)
    assert unique_keys(engine) == [BY_MESSAGE_ID]
    assert not {"ix_messages_message_id", "ix_messages_tenant"} & index_names(engine)
    assert_kept(engine, second, purged, rows)


def test_downgrade_restores_the_key_and_the_indexes(engine: Engine) -> None:
    migrate(engine)
    second, purged, rows = populate(engine)
    command.downgrade(_alembic_config(engine), BEFORE)
    assert unique_keys(engine) == [BY_TENANT]
    assert {"ix_messages_message_id", "ix_messages_tenant"} <= index_names(engine)
    assert_kept(engine, second, purged, rows)
    migrate(engine)  # and up again
    assert unique_keys(engine) == [BY_MESSAGE_ID]


def test_unique_keys_have_the_models_column_order(engine: Engine) -> None:
    """Alembic's comparison (tests/test_migrations.py) does not see a unique key's columns in
    another order, which decides the reads its index serves."""
    migrate(engine)
    for table in Base.metadata.sorted_tables:
        modelled = sorted(
            [column.name for column in constraint.columns]
            for constraint in table.constraints
            if constraint.__visit_name__ == "unique_constraint"
        )
        assert unique_keys(engine, table.name) == modelled, table.name


def test_a_store_purged_empty_keeps_its_key_sequence(engine: Engine) -> None:
    """Every message purged: the rebuilt table has no key to restart from."""
    command.upgrade(_alembic_config(engine), BEFORE)
    purged = [store_message(engine, "m1"), store_message(engine, "m2")]
    with engine.begin() as connection:
        connection.execute(delete(StoredMessage))
    migrate(engine)
    assert store_message(engine, "m3") > max(purged)
