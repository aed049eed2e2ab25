"""A ``RENKEI_*`` value that cannot be used stops every command before it does anything with
one coded line a variable (RK-OPS010: the variable, the value with any password masked, what
it takes) and exit 2, never a pydantic or SQLAlchemy traceback; an enumeration is read in any
case. Through the real CLI: the ``renkei`` console script in a subprocess, and typer's runner."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from pytest import MonkeyPatch
from typer.testing import CliRunner

from bus.cli import app, load_commands
from tests.support.receivers import free_port

RENKEI = Path(sys.executable).with_name("renkei")
PASSWORD = "Pa55-w0rd-tokyo"


def _cli(data_dir: Path, *args: str, **env: str) -> tuple[int, str]:
    load_commands()
    variables: dict[str, str | None] = {
        "RENKEI_DATA_DIR": str(data_dir),
        "TTY_COMPATIBLE": None,
        **env,
    }
    result = CliRunner().invoke(app, list(args), env=variables)
    return result.exit_code, result.output


def test_bad_integer_stops_serve_before_it_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env.update(RENKEI_DATA_DIR=str(data_dir), RENKEI_DISPATCH_WORKERS="abc")
    done = subprocess.run(
        [str(RENKEI), "serve", "--port", str(free_port()), "--http-workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "ValidationError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("RK-OPS010 環境変数 RENKEI_DISPATCH_WORKERS の値（abc）")
    assert "allowed: integer >= 0" in lines[0]
    assert "使える値：0 以上の整数。" in lines[0]  # the constraint in Japanese words too
    assert not data_dir.exists()  # nothing was run: no store made, no sample started


def test_bad_enumeration_names_the_values(tmp_path: Path) -> None:
    code, output = _cli(tmp_path, "messages", "list", RENKEI_SQLITE_SYNCHRONOUS="sometimes")
    assert code == 2
    assert "RK-OPS010" in output and "RENKEI_SQLITE_SYNCHRONOUS" in output
    assert "(sometimes); allowed: NORMAL | FULL." in output
    assert "Traceback" not in output


def test_enumeration_in_any_case_is_used(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    code, output = _cli(data_dir, "messages", "list", RENKEI_SQLITE_SYNCHRONOUS="full")
    assert code == 0, output
    # the value is in force: a connection of the store runs with synchronous=FULL (2)
    from bus.settings import Settings, SqliteSync
    from bus.store.db import open_store

    monkeypatch.setenv("RENKEI_SQLITE_SYNCHRONOUS", "Full")
    settings = Settings(data_dir=data_dir)
    assert settings.sqlite_synchronous is SqliteSync.FULL
    store = open_store(settings)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    finally:
        store.close()
    with sqlite3.connect(data_dir / "renkei.db") as plain:  # made by the command above
        assert plain.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_bad_database_url_never_shows_its_password(tmp_path: Path) -> None:
    for url in (
        f"postgresql+psycopg://renkei:{PASSWORD}@db.example.lg.jp:notaport/renkei",
        f"mysql://renkei:{PASSWORD}@db.example.lg.jp/renkei",
        f"postgres ql://renkei:{PASSWORD}@db/renkei",
        f"postgresql://renkei:{PASSWORD}@tama@db:port/renkei",  # an @ in the password
    ):
        code, output = _cli(tmp_path, "messages", "list", RENKEI_DATABASE_URL=url)
        assert code == 2, output
        assert "RK-OPS010" in output and "RENKEI_DATABASE_URL" in output
        assert PASSWORD not in output and PASSWORD[:4] not in output
        assert "renkei:***@db" in output
        assert "postgresql+psycopg://USER:PASSWORD@HOST/DB" in output


def test_every_bad_value_has_its_line(tmp_path: Path) -> None:
    code, output = _cli(
        tmp_path,
        "messages",
        "list",
        RENKEI_ACCESS_LOG="maybe",
        RENKEI_DISPATCH_LEASE_SECONDS="0",
    )
    assert code == 2
    lines = [line for line in output.splitlines() if line.startswith("RK-OPS010")]
    assert len(lines) == 2
    assert any("RENKEI_ACCESS_LOG" in line and "true | false" in line for line in lines)
    assert any("RENKEI_DISPATCH_LEASE_SECONDS" in line and "number > 0" in line for line in lines)


def test_help_needs_no_settings_and_good_values_work(tmp_path: Path) -> None:
    code, output = _cli(tmp_path, "serve", "--help", RENKEI_DISPATCH_WORKERS="abc")
    assert code == 0 and "Usage: renkei serve" in output
    code, output = _cli(tmp_path, "catalog", RENKEI_DISPATCH_WORKERS="abc")  # files only
    assert code == 0 and "RK-OPS010" not in output
    code, output = _cli(tmp_path, "messages", "list", RENKEI_DISPATCH_WORKERS="3")
    assert code == 0, output
    assert "RK-OPS010" not in output
