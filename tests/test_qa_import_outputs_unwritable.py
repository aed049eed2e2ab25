"""QA: an output of `renkei import notices` that cannot be written at the end (a folder of its
name in ``--out``, or of its stale ``.part`` name) is a coded error (RK-IO003, exit 2), not a
traceback; the records stay stored and the same command, once the folder is gone, writes the
outputs. (``--out`` itself a file: RK-IO002 before anything is stored, tested in
test_import_staff_reports.py.)"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.test_import_staff_reports import (
    ALL_NEW,
    SAMPLE,
    TENANT,
    read_csv,
    renkei,
    summary,
    xlsx_rows,
)

STEM = f"{SAMPLE.stem}_{TENANT}_{hashlib.sha256(SAMPLE.read_bytes()).hexdigest()[:8]}"
OUTPUTS = (f"{STEM}_評価変更リスト.xlsx", f"{STEM}_評価変更リスト.csv", f"{STEM}_エラー.csv")
ALL_DUPLICATE = "新規 0 / 重複 7 / エラー 3"  # the trap sample again, all of it stored


def refused(done: subprocess.CompletedProcess[str], named: str) -> None:
    """RK-IO003 once, naming ``named``, exit 2 (an unusable output), no traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "IsADirectoryError" not in done.stderr
    assert done.stderr.count("RK-IO003") == 1, done.stderr
    assert named in "".join(done.stderr.split()), done.stderr  # rich wraps long lines
    assert "新規" not in done.stdout


def written(out: Path) -> None:
    """The three outputs, whole: the list with the sample's 9 rows and a header each."""
    for name in OUTPUTS:
        assert (out / name).is_file(), sorted(p.name for p in out.iterdir())
    assert len(read_csv(out / OUTPUTS[1])) == len(xlsx_rows(out / OUTPUTS[0])) > 1
    assert len(read_csv(out / OUTPUTS[2])) == 4  # header + 3 errors
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("name", OUTPUTS)
def test_a_folder_named_as_an_output_is_a_coded_error_and_a_rerun_writes_it(
    tmp_path: Path, name: str
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    in_the_way = out / name
    in_the_way.mkdir(parents=True)
    refused(renkei(data, SAMPLE, "--out", str(out)), name)
    in_the_way.rmdir()  # the operator removes it
    # the run was not finished: it resumes at the end of the file and writes the outputs
    assert summary(renkei(data, SAMPLE, "--out", str(out))) == ALL_NEW
    written(out)
    assert summary(renkei(data, SAMPLE)) == ALL_DUPLICATE  # the records stayed stored


def test_a_folder_named_as_a_stale_part_is_a_coded_error_and_a_rerun_writes_it(
    tmp_path: Path,
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    part = f".{OUTPUTS[1]}.99999999.part"  # a killed run's .part name, a folder here
    (out / part).mkdir(parents=True)
    refused(renkei(data, SAMPLE, "--out", str(out)), part)
    (out / part).rmdir()
    assert summary(renkei(data, SAMPLE, "--out", str(out))) == ALL_NEW
    written(out)
