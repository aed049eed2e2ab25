"""Rolling upgrade (docs/operations.md, ローリングアップグレード): host A runs the new renkei,
whose first process migrates the store, while host B's processes of the release before keep
running for some minutes. That is safe only for a migration that leaves the previous release's
SQL working and its behaviour right: the runbook's table says, for every migration, whether the
previous release may keep running on it (可) or everything must be stopped first (不可).

- Every migration is in that table (the next one's author must decide), and each one marked 可
  is expand-only: no table, column or type of the schema before is dropped or changed, no
  column made NOT NULL, a new column nullable or defaulted, no new unique index (an older
  process's insert would fail on it). SQLite and PostgreSQL.
- Slow, PostgreSQL + RabbitMQ: the actual previous release (from git: the tree before the
  newest migration) serves and dispatches; the current renkei migrates the store under it; the
  previous release goes on storing, claiming and delivering — each delivery exactly once — and
  one of its processes started again afterwards refuses with RK-OPS009 (exit 2, no traceback).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from bus.settings import Settings
from bus.store.db import MIGRATIONS_DIR, _alembic_config, open_store, schema_version
from tests.support.hub_server import _config, _wait_until_up, sample, serialize
from tests.support.receivers import Receiver, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = ROOT / "docs" / "operations.md"
SECTION = "## ローリングアップグレード"
_ROW = re.compile(r"^\|\s*`?(\d{4}\w*)`?\s*\|\s*(可|不可)\s*\|", re.MULTILINE)


def _revisions() -> dict[str, str | None]:
    """Every migration: its revision → the one it revises (None for the first)."""
    scripts = ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()
    return {script.revision: script.down_revision for script in scripts}  # type: ignore[misc]


def _runbook_table() -> dict[str, str]:
    """The runbook's table: revision → 可 (the previous release may keep running) or 不可."""
    text_ = RUNBOOK.read_text(encoding="utf-8")
    assert SECTION in text_, f"{SECTION} is missing from docs/operations.md"
    section = text_.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return dict(_ROW.findall(section))


def test_every_migration_says_whether_the_previous_release_may_keep_running() -> None:
    table = _runbook_table()
    assert set(table) == set(_revisions())


def _rolling(answer: str) -> list[str]:
    """The revisions the runbook marks ``answer`` (none while it has no table: the test above
    then fails)."""
    if SECTION not in RUNBOOK.read_text(encoding="utf-8"):
        return []
    return sorted(rev for rev, said in _runbook_table().items() if said == answer)


def _shape(engine: Engine) -> dict[str, dict[str, Any]]:
    """Tables → their columns (type, nullable, default) and unique indexes/constraints."""
    found: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        inspector = inspect(connection)
        for table in inspector.get_table_names():
            if table == "alembic_version":
                continue
            columns = {
                c["name"]: (str(c["type"]), c["nullable"], c.get("default") is not None)
                for c in inspector.get_columns(table)
            }
            unique = {
                tuple(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]
            } | {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
            found[table] = {"columns": columns, "unique": unique}
    return found


@pytest.mark.parametrize("revision", _rolling("可"))
def test_a_migration_marked_rolling_is_expand_only(engine: Engine, revision: str) -> None:
    before = _revisions()[revision]
    if before is None:
        pytest.skip("the first migration has no previous release")
    config = _alembic_config(engine)
    command.upgrade(config, before)
    old = _shape(engine)
    command.upgrade(config, revision)
    new = _shape(engine)
    for table, was in old.items():
        assert table in new, f"{revision} drops table {table}"
        columns = new[table]["columns"]
        for name, (type_, nullable, _) in was["columns"].items():
            assert name in columns, f"{revision} drops {table}.{name}"
            assert columns[name][0] == type_, f"{revision} changes the type of {table}.{name}"
            assert columns[name][1] or not nullable, f"{revision} makes {table}.{name} NOT NULL"
        for name, (_, nullable, default) in columns.items():
            if name not in was["columns"]:
                assert nullable or default, f"{revision} adds {table}.{name} NOT NULL, no default"
        added = new[table]["unique"] - was["unique"]
        assert not added, f"{revision} adds a unique index on {table}: {added}"


# --- the previous release itself, on the store the current one migrated under it -------------


def _previous_release(into: Path) -> Path:
    """The tree before the newest migration, exported from git (skips where there is none):
    the parent of the commit that added the newest migration file, or HEAD when that file is
    not committed yet."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    newest = next(MIGRATIONS_DIR.glob(f"versions/{head}.py"), None)
    git = shutil.which("git")
    if git is None or newest is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to export the previous release")
    path = str(newest.relative_to(ROOT))
    added = subprocess.run(
        [git, "log", "--diff-filter=A", "--format=%H", "-1", "--", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    revision = f"{added}^" if added else "HEAD"
    into.mkdir()
    archive = subprocess.run(
        [git, "archive", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


class Host:
    """``renkei`` processes of one release (its tree on PYTHONPATH) on one store."""

    def __init__(self, tree: Path, env: dict[str, str]) -> None:
        self.tree, self.env = tree, {**env, "PYTHONPATH": str(tree)}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
        command_ = [sys.executable, "-c", "from bus.cli import app; app()", *args]
        with log.open("ab") as stderr:
            process = subprocess.Popen(
                command_,
                cwd=self.tree,
                env={**self.env, **extra},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    started = Receiver(tmp_path, "systems").start()
    yield started
    started.stop()


def _send(url: str, count: int) -> list[str]:
    """``count`` notices through the REST adapter, each acknowledged 202: their ids."""
    ids = []
    with httpx.Client(timeout=30) as client:
        for number in range(count):
            service = ("LevyNotice", "ResidentChangeNotice")[number % 2]
            document = sample(service)
            answer = client.post(
                f"{url}/api/v1/messages/{service}",
                content=serialize(document),
                headers={"Content-Type": "application/xml"},
            )
            assert answer.status_code == 202, answer.text
            ids.append(str(document.findtext(".//{urn:renkei:platform:envelope:1}messageId")))
    return ids


def _deliveries(url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT m.message_id, d.destination, d.state FROM deliveries d"
                    " JOIN messages m ON m.id = d.message_pk"
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(m), str(d), str(s)) for m, d, s in rows]


@pytest.mark.slow
@pytest.mark.postgres
def test_the_previous_release_keeps_working_on_the_migrated_store(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str, receiver: Receiver
) -> None:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if _runbook_table().get(str(head)) != "可":
        pytest.skip(f"{head}: the runbook says stop everything first (不可)")
    old_tree = _previous_release(tmp_path / "previous")
    config = _config(tmp_path, old_tree / "samples" / "config", receiver.port, loopback=True)
    env = {
        **os.environ,
        "RENKEI_DATABASE_URL": postgres_url,
        "RENKEI_BROKER_URL": rabbitmq_url,
        "RENKEI_DATA_DIR": str(tmp_path / "host-b"),
        "RENKEI_CONFIG_DIR": str(config),
    }
    host_b = Host(old_tree, env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        serve = host_b.start(
            "serve",
            "--no-samples",
            "--port",
            str(port),
            log=tmp_path / "b-serve.log",
            RENKEI_DISPATCH_WORKERS="0",
        )
        _wait_until_up(url, serve, timeout=60)
        host_b.start("worker", "--concurrency", "2", log=tmp_path / "b-worker.log")
        ids = _send(url, 4)
        wait_for(lambda: _all_delivered(postgres_url), timeout=60)
        engine = create_engine(postgres_url)
        try:
            previous = schema_version(engine)
        finally:
            engine.dispose()
        assert previous == _revisions()[str(head)]

        # host A: the current renkei's first process migrates the store under host B
        open_store(Settings(data_dir=tmp_path / "host-a", database_url=postgres_url)).close()

        after = _send(url, 6)  # host B goes on: stores, claims and delivers
        wait_for(lambda: _all_delivered(postgres_url), timeout=60)
        rows = _deliveries(postgres_url)
        assert {m for m, _, _ in rows} == set(ids + after)
        applied = Counter(_applied(receiver))
        assert applied == Counter({(d, m): 1 for m, d, _ in rows})
        assert [r for r in receiver.records() if r.get("duplicate")] == []

        # a host B process started again now (a crash, a reboot) refuses, clearly
        again = host_b.start("worker", log=tmp_path / "b-again.log")
        assert again.wait(60) == 2
        said = (tmp_path / "b-again.log").read_text(encoding="utf-8")
        assert "RK-OPS009" in said
        assert "Traceback" not in said
    finally:
        host_b.stop()
    engine = create_engine(postgres_url)
    try:
        assert schema_version(engine) == head
    finally:
        engine.dispose()


def _all_delivered(url: str) -> bool:
    return {state for _, _, state in _deliveries(url)} == {"delivered"}


def _applied(receiver: Receiver) -> list[tuple[str, str]]:
    return [(r["system"], r["messageId"]) for r in receiver.records() if r["applied"]]
