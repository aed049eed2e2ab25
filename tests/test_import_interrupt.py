"""Ctrl-C in `renkei import notices`'s last stage (after the last chunk): it stops with 130
and a rerun finishes with the counts, or — once the outputs or the batch are being finished
— it finishes, says so (Japanese and English) and exits 130: never a silent 0, never "run it
again to resume" for a batch already finished. The signal is a real SIGINT, sent by the
import to itself at a chosen point, so the tests do not depend on timing."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bus.cli import app
from bus.imports import runner
from bus.imports.generator import generate
from bus.imports.worklist import DONE, Worklist

TENANT = "412066"
RECORDS = 1200  # two chunks
ALL_NEW = f"新規 {RECORDS} / 重複 0 / エラー 0"
FINISHED = ("最後まで終えました", "the import was finished")
INTERRUPTED = ("中断しました", "Interrupted; run the same command again to resume")


@pytest.fixture
def notices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "400")
    path = tmp_path / "notices.csv"
    generate(path, RECORDS)
    return path


def ctrl_c(times: int = 1) -> None:
    for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)  # handled before this returns (main thread)


def after(original: Callable[..., Any], times: int = 1) -> Callable[..., Any]:
    def patched(*args: Any) -> Any:
        result = original(*args)
        ctrl_c(times)
        return result

    return patched


def before(original: Callable[..., Any], times: int = 1) -> Callable[..., Any]:
    def patched(*args: Any) -> Any:
        ctrl_c(times)
        return original(*args)

    return patched


def run(notices: Path) -> Result:
    command = ["import", "notices", str(notices), "--tenant", TENANT, "--jobs", "1"]
    return CliRunner().invoke(app, [*command, "--out", str(notices.parent / "out")])


def status(notices: Path) -> str:
    [work] = (notices.parent / "data" / "imports").glob("*-412066.sqlite")
    with sqlite3.connect(work) as db:
        return str(db.execute("select status from batch").fetchone()[0])


def outputs(notices: Path) -> list[str]:
    return sorted(p.name for p in (notices.parent / "out").iterdir())


def finished_all_the_same(result: Result, notices: Path) -> None:
    assert result.exit_code == 130, result.output
    assert result.stdout.strip().splitlines()[-1] == ALL_NEW  # the summary is shown
    assert all(text in result.stderr for text in FINISHED), result.stderr
    assert not any(text in result.stderr for text in INTERRUPTED)
    assert status(notices) == DONE
    assert len(outputs(notices)) == 3


def test_ctrl_c_after_the_last_chunk_stops_and_a_rerun_finishes_with_the_counts(
    notices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def commit(self: Worklist, *args: Any) -> None:
        original_commit(self, *args)
        if self.state.cursor_line == RECORDS + 2:  # the last chunk: the file is read
            ctrl_c()

    original_commit = Worklist.commit
    with monkeypatch.context() as patch:
        patch.setattr(Worklist, "commit", commit)
        stopped = run(notices)
    assert stopped.exit_code == 130, stopped.output
    assert all(text in stopped.stderr for text in INTERRUPTED), stopped.stderr
    resumed = run(notices)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip().splitlines()[-1] == ALL_NEW  # not a fresh pass of 重複
    assert len(outputs(notices)) == 3


def test_ctrl_c_while_the_outputs_are_written_finishes_them_and_says_so(
    notices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = runner.NoticeImport._write_outputs
    monkeypatch.setattr(runner.NoticeImport, "_write_outputs", before(write))
    finished_all_the_same(run(notices), notices)


def test_ctrl_c_once_the_batch_is_finished_is_not_lost(
    notices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Formerly: exit 130 with "run it again to resume", though a rerun began a fresh pass
    (all 重複), and the summary was never shown."""
    monkeypatch.setattr(Worklist, "finish", after(Worklist.finish))
    finished_all_the_same(run(notices), notices)


def test_ctrl_c_while_the_import_closes_is_not_silent(
    notices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Formerly: exit 130 with nothing on the screen, no summary."""
    monkeypatch.setattr(runner.NoticeImport, "close", after(runner.NoticeImport.close))
    finished_all_the_same(run(notices), notices)


def test_ctrl_c_twice_while_the_outputs_are_written_stops_and_a_rerun_writes_them(
    notices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = runner.NoticeImport._write_outputs
    with monkeypatch.context() as patch:
        patch.setattr(runner.NoticeImport, "_write_outputs", before(write, times=2))
        stopped = run(notices)
    assert stopped.exit_code == 130, stopped.output
    assert all(text in stopped.stderr for text in INTERRUPTED), stopped.stderr
    assert status(notices) != DONE
    resumed = run(notices)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip().splitlines()[-1] == ALL_NEW  # the counts kept
    assert len(outputs(notices)) == 3
