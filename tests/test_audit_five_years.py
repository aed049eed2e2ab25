"""監査対応（5年分の検証）: what the prefecture's auditor runs in year 5, on small chains.

`renkei audit verify` reads a chain's checkpoints and anchor files as streams (a fixed number
of statements whatever their number: five years of checkpoints every few minutes are hundreds
of thousands), tells its progress on long work, says a broken link in Japanese and English
with its code; `renkei audit admin --tenant T --resident 宛名番号` lists who looked a resident
up without the auditor computing the keyed pseudonym. The measurements at scale (1 and 3
million records) are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from typer.testing import CliRunner

from bus.cli import app
from bus.settings import Settings
from bus.store import audit
from bus.store.admin_audit import record_admin_action
from bus.store.audit import AuditEntry, append_audits
from bus.store.checkpoints import anchor_document, generate_key, load_signing_key, write_anchor
from bus.store.checkpoints import write_checkpoints as sign_heads
from bus.store.db import Store, open_store
from bus.store.trail import record_subject_search, resident_key
from bus.store.trail_report import pseudonym_key

TOWN = "011002"
OTHER = "012025"
RESIDENT = "0000012345"
START = datetime(2021, 12, 1, tzinfo=UTC)


@dataclass
class Years:
    store: Store
    settings: Settings
    env: dict[str, str | None]
    key: Path
    anchor: Path

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(app, list(args), env=self.env)

    def sql(self, statement: str, **params: Any) -> None:
        with self.store.sessions.begin() as session:
            session.execute(text(statement), params)


def grow(years: Years, checkpoints: int, per_checkpoint: int = 2) -> None:
    """``checkpoints`` rounds of records on the town's chain, each closed by a signed
    checkpoint in the database and the anchor directory (a day apart)."""
    key = load_signing_key(years.key)
    for day in range(checkpoints):
        moment = START + timedelta(days=day)
        with years.store.sessions.begin() as session:
            entries = [
                AuditEntry(TOWN, "stored", f"m-{day}-{n}", {"n": n}, "jumin", moment)
                for n in range(per_checkpoint)
            ]
            append_audits(session, entries)
            documents = [
                anchor_document(c)
                for c in sign_heads(session, key, now=moment + timedelta(minutes=1))
            ]
        for document in documents:
            write_anchor(years.anchor, document)


@pytest.fixture
def years(tmp_path: Path, store_settings: Settings) -> Iterator[Years]:
    key, anchor = tmp_path / "audit.pem", tmp_path / "anchor"
    generate_key(key)
    env: dict[str, str | None] = {
        "RENKEI_DATA_DIR": str(store_settings.data_dir),
        "RENKEI_DATABASE_URL": store_settings.database_url or "",
        "RENKEI_AUDIT_SIGNING_KEY": None,
        "RENKEI_AUDIT_ANCHOR_DIR": None,
    }
    store = open_store(store_settings)
    try:
        yield Years(store, store_settings, env, key, anchor)
    finally:
        store.close()


def statements_of_verify(years: Years) -> int:
    """How many SQL statements one `audit verify` (key and anchor) of the store sends."""
    from bus.store.audit_verify import verify_audit
    from bus.store.checkpoints import load_verify_key

    sent: list[str] = []

    def count(*_: object) -> None:
        sent.append("")

    event.listen(years.store.engine, "before_cursor_execute", count)
    try:
        with years.store.sessions() as session:
            verdicts = verify_audit(session, key=load_verify_key(years.key), anchor=years.anchor)
    finally:
        event.remove(years.store.engine, "before_cursor_execute", count)
    assert all(v.ok for v in verdicts), verdicts
    assert verdicts[0].anchored == verdicts[0].checkpoints > 0
    return len(sent)


def test_checkpoints_and_anchor_files_are_read_in_a_fixed_number_of_statements(
    years: Years,
) -> None:
    """Five years of checkpoints every few minutes: one statement per checkpoint and two per
    anchor file made verification grow with them (minutes at 10⁵ checkpoints)."""
    grow(years, 3)
    few = statements_of_verify(years)
    grow(years, 30)
    many = statements_of_verify(years)
    assert many == few, (few, many)


def test_a_long_verification_tells_its_progress_on_stderr(
    years: Years, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bus.cli.audit as cli_audit

    grow(years, 5, per_checkpoint=4)  # 20 records
    monkeypatch.setattr(audit, "PROGRESS_EVERY", 5)
    monkeypatch.setattr(cli_audit, "PROGRESS_EVERY_S", 0.0)
    result = years.cli("audit", "verify", "--json", "--key", f"{years.key}.pub")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[TOWN]["records"] == 20  # stdout is the JSON only
    lines = [line for line in result.stderr.splitlines() if line.startswith("検証中")]
    assert f"検証中 verifying {TOWN}: seq 10 / 20 (50%)" in lines, result.stderr


def test_a_broken_link_is_told_in_japanese_and_english_with_its_code(years: Years) -> None:
    grow(years, 3)
    years.sql("UPDATE audit_records SET actor = 'mallory' WHERE tenant = :t AND seq = 3", t=TOWN)
    result = years.cli("audit", "verify", "--tenant", TOWN)
    assert result.exit_code == 1
    assert f"RK-AUD001 団体 {TOWN} の監査記録の連鎖が seq 3 で壊れています。" in result.stdout
    assert f"The audit chain of tenant {TOWN} is broken at seq 3." in result.stdout


def test_a_tail_cut_under_a_kept_checkpoint_is_named_missing(years: Years) -> None:
    """The insider cuts the chain's tail and rolls the head back, but leaves the checkpoint
    rows: the signed seq has no record any more — said so, not "differs"."""
    grow(years, 3)  # seq 1-6, checkpoints at 2, 4, 6
    years.sql("DELETE FROM audit_records WHERE tenant = :t AND seq > 3", t=TOWN)
    years.sql(
        "UPDATE audit_heads SET seq = 3, hash = (SELECT hash FROM audit_records"
        " WHERE tenant = :t AND seq = 3) WHERE tenant = :t",
        t=TOWN,
    )
    result = years.cli("audit", "verify", "--tenant", TOWN, "--json", "--key", str(years.key))
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)[TOWN]
    assert (verdict["code"], verdict["first_bad_seq"]) == ("RK-AUD002", 4)
    assert "missing" in verdict["reason"]


def look_ups(years: Years) -> None:
    """Operators look residents up: a trail of RESIDENT, one of someone else, a message
    search of RESIDENT over two towns, one in another town only."""
    key = pseudonym_key(years.settings)
    with years.store.sessions.begin() as session:
        for actor, resident in (("console:sato", RESIDENT), ("console:ito", "0000099999")):
            detail = {
                "tenant": TOWN,
                "resident": "*********" + resident[-1],
                "resident_key": resident_key(TOWN, resident, key),
            }
            record_admin_action(session, actor, "message.trail", detail)
        record_subject_search(session, "console:kato", RESIDENT, [TOWN, OTHER], 2, key)
        record_subject_search(session, "console:endo", RESIDENT, [OTHER], 1, key)
        record_admin_action(session, "cli:root", "user.add", {"user": "op1"})


def test_who_looked_a_resident_up_is_listed_by_their_number(years: Years) -> None:
    look_ups(years)
    result = years.cli(
        "audit", "admin", "--tenant", TOWN, "--resident", RESIDENT, "--json", "--limit", "10"
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["records"]
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("message.trail", "console:sato"),
        ("message.search", "console:kato"),
    ]
    assert RESIDENT not in result.output  # masked and keyed, never in clear
    assert all(r["detail"].get("resident", "*********5").endswith("5") for r in rows)


def test_a_resident_without_the_town_is_a_usage_error(years: Years) -> None:
    result = years.cli("audit", "admin", "--resident", RESIDENT)
    assert result.exit_code == 2 and "RK-AUD008" in result.output
    result = years.cli("audit", "admin", "--tenant", TOWN, "--resident", "12-34")
    assert result.exit_code == 2 and "RK-STO010" in result.output


def test_a_long_verification_holds_no_writer_back(
    years: Years, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Minutes of `audit verify` on SQLite took the one write lock (BEGIN IMMEDIATE) for their
    length: the hub's ingest and every other command waited past the busy timeout. Midway
    through the walk another connection must still be able to write (SQLite: take the write
    lock within 0.2 s; PostgreSQL: append to the admin chain the verify is reading)."""
    import sqlite3

    import bus.cli.audit as cli_audit

    grow(years, 3)
    path = years.settings.data_dir / "renkei.db"
    wrote: list[bool] = []

    def write_meanwhile(self: object, chain: str, seq: int, head: int) -> None:
        if years.settings.database_url:
            with years.store.sessions.begin() as session:
                record_admin_action(session, "cli:test", "test.meanwhile")
            wrote.append(True)
            return
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            wrote.append(True)
        except sqlite3.OperationalError:
            wrote.append(False)
        finally:
            other.close()

    monkeypatch.setattr(audit, "PROGRESS_EVERY", 2)
    monkeypatch.setattr(cli_audit._ProgressLines, "__call__", write_meanwhile)
    result = years.cli("audit", "verify", "--tenant", TOWN)
    assert result.exit_code == 0, result.output
    assert wrote and all(wrote), wrote
