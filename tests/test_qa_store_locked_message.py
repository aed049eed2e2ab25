"""QA: a SQLite store locked by another process (an old hub during an upgrade, a ``sqlite3``
shell in ``BEGIN EXCLUSIVE``) past the busy timeout is told as such — RK-OPS013, stop the
other process and run the command again — not as RK-OPS001 "the database cannot be reached",
which stays for a database that does not answer.

The command runs as its own process against a real store file locked by this one. SQLite's
busy timeout (``SQLITE_BUSY_TIMEOUT_MS``, 30 s) has no setting (``RENKEI_DATABASE_LOCK_TIMEOUT``
is PostgreSQL's), so the child sets the module's constant to 1 s before it runs the CLI as
the ``renkei`` script does: the same code, a shorter wait."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

RENKEI = str(Path(sys.executable).with_name("renkei"))
SHORT_WAIT = (
    "import sys; import bus.store.db as db; db.SQLITE_BUSY_TIMEOUT_MS = 1000;"
    " from bus.cli import app; sys.argv[0] = 'renkei'; sys.exit(app())"
)


def dlq_list(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", SHORT_WAIT, "dlq", "list"]
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


# a sqlite3 shell's BEGIN EXCLUSIVE (reads go on in WAL: the command's BEGIN IMMEDIATE waits,
# bus/cli/app.py), and a process holding the file in exclusive locking mode (not even the
# store's opening reads it: bus/store/db.py's migrate)
HOLDERS = {"begin-exclusive": (), "locking-mode-exclusive": ("PRAGMA locking_mode=EXCLUSIVE",)}


@pytest.mark.parametrize("how", HOLDERS)
def test_a_store_locked_by_another_process_says_to_stop_it(tmp_path: Path, how: str) -> None:
    env = {"RENKEI_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"}
    first = dlq_list(env)  # creates and migrates the store
    assert first.returncode == 0, first.stderr
    holder = sqlite3.connect(tmp_path / "data" / "renkei.db", isolation_level=None)
    for pragma in HOLDERS[how]:
        holder.execute(pragma)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = dlq_list(env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.returncode == 2, locked.stderr
    assert "Traceback" not in locked.stderr
    told = "".join(locked.stderr.replace("│", "").split())  # click may box and wrap it
    assert told.count("RK-OPS013") == 1 and "RK-OPS001" not in told
    assert "lockedbyanotherprocess" in told and "runthecommandagain" in told
    assert "databaseislocked" in told  # the driver's reason, kept
    assert dlq_list(env).returncode == 0  # the lock released: the command works


def test_a_database_that_does_not_answer_stays_rk_ops001(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://renkei@127.0.0.1:{port}/renkei"
    done = dlq_list({"RENKEI_DATA_DIR": str(tmp_path / "data"), "RENKEI_DATABASE_URL": url})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("RK-OPS001") == 1 and "RK-OPS013" not in done.stderr
