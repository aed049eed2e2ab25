"""What the operator's CLI prints: identifiers never cut in tables (piped or on a terminal),
every timestamp of ``--json`` with its offset, and a plain coded usage error for
``audit verify --anchor`` without ``--key`` — through the real CLI on a real store."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.config.models import RetryPolicy
from bus.dispatch.worker import Worker
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery
from tests.support.receivers import Receiver, receiver_factory
from tests.test_dispatch import add_message, drain, hub_config, states

receivers = pytest.fixture(receiver_factory, name="receivers")

LONG_SYSTEM = "kotei-shisanzei-kazei-daichou-system"  # a long destination id (wraps others)
ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(sqlite_settings: Settings) -> Iterator[Store]:
    opened = open_store(sqlite_settings)
    yield opened
    opened.close()


def _cli(settings: Settings, *args: str, **env: str | None) -> Any:
    variables: dict[str, str | None] = {
        "RENKEI_DATA_DIR": str(settings.data_dir),
        "RENKEI_AUDIT_SIGNING_KEY": None,
        "RENKEI_AUDIT_ANCHOR_DIR": None,
        "TTY_COMPATIBLE": None,
        "COLUMNS": None,
        **env,
    }
    return CliRunner().invoke(app, list(args), env=variables)


def _dead_letters(
    store: Store, receivers: Callable[[str], Receiver], count: int = 2
) -> tuple[list[str], list[int]]:
    """``count`` deliveries dead-lettered for real: the receiver answers 503 until the
    retry policy (2 attempts) is exhausted."""
    x = receivers("juki").start("--fail-status", "503")
    policy = RetryPolicy(
        max_attempts=2, base_delay=timedelta(milliseconds=10), max_delay=timedelta(milliseconds=20)
    )
    made = [add_message(store.sessions, f"S{i}", ("juki",)) for i in range(count)]
    worker = Worker(store.sessions, lambda: hub_config({"juki": x.url}, policy), None, "w")
    ids = [delivery for _, (delivery,) in made]
    drain(worker, lambda: all(states(store.sessions)[d] == "dead" for d in ids))
    worker.close()
    return [message_id for message_id, _ in made], ids


# --- 1. audit verify --anchor without --key ---------------------------------------------------


def test_verify_anchor_without_a_key_is_a_usage_error_naming_key(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    anchor = tmp_path / "anchor"
    anchor.mkdir()
    result = _cli(sqlite_settings, "audit", "verify", "--anchor", str(anchor))
    assert result.exit_code == 2, result.output
    assert "RK-AUD006" in result.output and "--key" in result.output
    assert "RK-AUD004" not in result.output  # not "the key - cannot be used"
    from_env = _cli(sqlite_settings, "audit", "verify", RENKEI_AUDIT_ANCHOR_DIR=str(anchor))
    assert from_env.exit_code == 2 and "RK-AUD006" in from_env.output
    assert "RENKEI_AUDIT_ANCHOR_DIR" in from_env.output
    # without the anchor, no key is needed: hashes compared, signatures said to be unchecked
    plain = _cli(sqlite_settings, "audit", "verify")
    assert plain.exit_code == 0, plain.output
    assert "signatures not checked" in plain.output


def test_checkpoint_without_a_signing_key_says_which_setting_is_missing(
    sqlite_settings: Settings,
) -> None:
    result = _cli(sqlite_settings, "audit", "checkpoint")
    assert result.exit_code == 1
    assert "RK-AUD007" in result.output and "RENKEI_AUDIT_SIGNING_KEY" in result.output
    assert "RK-AUD004" not in result.output


# --- 2. identifiers are never cut in tables ---------------------------------------------------


def test_piped_tables_print_whole_identifiers(
    store: Store, sqlite_settings: Settings, receivers: Callable[[str], Receiver]
) -> None:
    message_ids, _ = _dead_letters(store, receivers)
    listed = _cli(sqlite_settings, "messages", "list")
    assert listed.exit_code == 0, listed.output
    assert "…" not in listed.output
    for message_id in message_ids:
        assert message_id in listed.output
    dead = _cli(sqlite_settings, "dlq", "list")
    assert dead.exit_code == 0, dead.output
    assert "…" not in dead.output
    for message_id in message_ids:
        assert message_id in dead.output
    assert "HTTP 503 Service Unavailable" in dead.output  # the last error, whole
    shown = _cli(sqlite_settings, "messages", "show", message_ids[0])
    assert shown.exit_code == 0, shown.output
    assert "…" not in shown.output


@pytest.mark.parametrize("columns", ["80", "60"])
def test_terminal_tables_keep_identifiers_whole(
    store: Store, sqlite_settings: Settings, columns: str
) -> None:
    """On a terminal the table fits its width by wrapping the other columns, never by
    cutting an identifier with an ellipsis."""
    made = [add_message(store.sessions, "A", ("juki", LONG_SYSTEM)) for _ in range(2)]
    with store.sessions.begin() as session:
        for _, ids in made:
            for delivery in ids:
                row = session.get_one(Delivery, delivery)
                row.state, row.last_error = "dead", "HTTP 503 Service Unavailable " * 3
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": columns}
    for command in (("messages", "list"), ("dlq", "list")):
        result = _cli(sqlite_settings, *command, **terminal)
        assert result.exit_code == 0, result.output
        assert "…" not in result.output, command
        lines = result.output.splitlines()
        for message_id, _ in made:
            assert any(message_id in line for line in lines), (command, message_id)


# --- 5. timestamps in --json carry their offset -----------------------------------------------


def _timestamps(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and re.match(r"\d{4}-\d\d-\d\d[T ]\d\d:", item):
                yield key, item
            else:
                yield from _timestamps(item)
    elif isinstance(value, list):
        for item in value:
            yield from _timestamps(item)


def test_every_json_timestamp_has_an_offset(
    store: Store, sqlite_settings: Settings, receivers: Callable[[str], Receiver]
) -> None:
    message_ids, _ = _dead_letters(store, receivers, count=1)
    outputs = {
        command: _cli(sqlite_settings, *command, "--json")
        for command in (
            ("dlq", "list"),
            ("messages", "list"),
            ("messages", "show", message_ids[0]),
        )
    }
    seen = set()
    for command, result in outputs.items():
        assert result.exit_code == 0, (command, result.output)
        for key, stamp in _timestamps(json.loads(result.stdout)):
            assert ISO_WITH_OFFSET.fullmatch(stamp), (command, key, stamp)
            assert datetime.fromisoformat(stamp).utcoffset() is not None
            seen.add((command[0], key))
    assert {("dlq", "finished_at"), ("dlq", "at"), ("messages", "received_at")} <= seen
