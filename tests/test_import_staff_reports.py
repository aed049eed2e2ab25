"""Defects municipal staff reported in `renkei import notices`, through the real command:
the fixed-width length message, the 大字 → 地番 order of the list, outputs of same-named files,
a resident index damaged past its header, folders left by a refused import, `.part` files
left by a killed one, and the one `--out` check before anything is stored."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import pytest
from openpyxl import load_workbook

from bus.imports.generator import generate

ROOT = Path(__file__).resolve().parent.parent
NOTICES = ROOT / "samples" / "notices"
SAMPLE = NOTICES / "traps-cp932.csv"
RESIDENTS = NOTICES / "residents-412066.csv"
TENANT = "412066"
RENKEI = str(Path(sys.executable).with_name("renkei"))
ALL_NEW = "新規 6 / 重複 1 / エラー 3"  # the trap sample into an empty hub


def renkei(
    data: Path, file: Path, *options: str, tenant: str = TENANT, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    command = [RENKEI, "import", "notices", str(file), "--tenant", tenant, *options]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "COLUMNS": "400"}
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def summary(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.strip().splitlines()[-1]


def one(out: Path, suffix: str) -> Path:
    """The only output in ``out`` whose name ends with ``suffix``."""
    [found] = [p for p in out.iterdir() if p.name.endswith(suffix)]
    return found


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def xlsx_rows(path: Path) -> list[list[str]]:
    book = load_workbook(path, read_only=True)
    try:
        return [
            ["" if v is None else str(v) for v in row]
            for sheet in book.worksheets
            for row in sheet.iter_rows(values_only=True)
        ]
    finally:
        book.close()


# --- 1. fixed width: a record of the wrong length is told in bytes ---------------------------


def test_a_fixed_width_record_of_the_wrong_length_is_told_in_bytes(tmp_path: Path) -> None:
    """Line 8 of the fixed-width sample is 500 bytes of a 1,100-byte layout: the message spoke
    of 500 項目 / fields."""
    fixed = NOTICES / "traps-fixed-cp932.dat"
    out = tmp_path / "out"
    done = renkei(tmp_path / "data", fixed, "--layout", "houmu_fixed", "--out", str(out))
    assert summary(done) == "新規 5 / 重複 0 / エラー 2"
    errors = read_csv(one(out, "_エラー.csv"))
    [short] = [row for row in errors[1:] if row[0] == "8"]
    code, japanese, english = short[3], short[4], short[5]
    assert code == "RK-IMP014"
    assert "500 バイト" in japanese and "1100 バイト" in japanese and "項目" not in japanese
    assert "500 bytes" in english and "1100 bytes expected" in english
    assert "field" not in english


# --- 2. the list's order: 大字 normalised, 地番 in numeric order -----------------------------

PLACES = [  # (受付番号, 所在, 地番), in the order the list must show them
    ("11", "武雄市中央２丁目", "3番"),
    ("12", "武雄市中央二丁目", "4番"),
    ("13", "武雄市中央10丁目", "1番"),
    ("21", "武雄市武雄町富岡", "2番"),
    ("22", "武雄市武雄町富岡字上町", "5番2"),
    ("23", "佐賀県武雄市武雄町大字富岡", "５番１０"),
    ("24", "武雄市武雄町大字富岡字下町", "10番"),
    ("25", "武雄市武雄町大字富岡", "十二番"),
    ("31", "武雄市武雄町大字朝日", "1番"),
    ("41", "武雄市武雄町武雄", "1番"),
    ("42", "武雄市 武雄町　大字武雄", "3番"),
]


def test_the_list_groups_each_oaza_however_written_and_orders_lots_as_numbers(
    tmp_path: Path,
) -> None:
    """「大字富岡」 and 「富岡」 (or 「富岡字上町」) were sorted apart, by code point."""
    path = tmp_path / "places.csv"
    generate(path, len(PLACES), encoding="utf-8")
    rows = read_csv(path)
    header = rows[0]
    at = {name: header.index(name) for name in ("受付番号", "所在", "地番", "家屋番号")}
    shuffled = [PLACES[i] for i in (7, 0, 10, 4, 2, 9, 5, 1, 8, 3, 6)]
    for row, (receipt, place, lot) in zip(rows[1:], shuffled, strict=True):
        row[at["受付番号"]], row[at["所在"]], row[at["地番"]] = receipt, place, lot
        if row[at["家屋番号"]]:
            row[at["家屋番号"]] = lot
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)
    out = tmp_path / "out"
    assert summary(renkei(tmp_path / "data", path, "--out", str(out))).startswith("新規 11 /")
    listed = xlsx_rows(one(out, "_評価変更リスト.xlsx"))
    receipts = list(dict.fromkeys(row[1] for row in listed[1:]))
    assert receipts == [receipt for receipt, _place, _lot in PLACES]
    assert listed[1:] == read_csv(one(out, "_評価変更リスト.csv"))[1:]


# --- 3. same-named files from two folders into one --out -------------------------------------


def test_same_named_files_from_two_folders_keep_their_own_outputs(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "notices.csv", tmp_path / "b" / "notices.csv"
    first.parent.mkdir()
    second.parent.mkdir()
    generate(first, 3, seed=1)
    generate(second, 4, seed=2)
    out, data = tmp_path / "out", tmp_path / "data"
    assert summary(renkei(data, first, "--out", str(out))) == "新規 3 / 重複 0 / エラー 0"
    assert summary(renkei(data, second, "--out", str(out))) == "新規 4 / 重複 0 / エラー 0"
    for path, count in ((first, 3), (second, 4)):
        short = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        stem = f"notices_{TENANT}_{short}"
        listing = read_csv(out / f"{stem}_評価変更リスト.csv")
        assert len({row[1] for row in listing[1:]}) == count
        assert xlsx_rows(out / f"{stem}_評価変更リスト.xlsx")[1:] == listing[1:]
        assert read_csv(out / f"{stem}_エラー.csv") == [
            ["行", "バイト位置", "項目", "コード", "メッセージ", "message"]
        ]
    assert len(list(out.iterdir())) == 6
    # the same file again replaces its own outputs
    assert summary(renkei(data, first, "--out", str(out))) == "新規 0 / 重複 3 / エラー 0"
    assert len(list(out.iterdir())) == 6


# --- 4. a resident index damaged past its header ---------------------------------------------


def _damaged_index(tmp_path: Path, how: str) -> Path:
    """The data folder of a hub whose resident index holds the sample extract, then is cut
    short or garbled past its first page (its header and schema still read)."""
    data = tmp_path / "data"
    assert summary(renkei(data, SAMPLE, "--residents", str(RESIDENTS))) == ALL_NEW
    index = data / "imports" / "residents.sqlite"
    with sqlite3.connect(index) as db:
        page = int(db.execute("pragma page_size").fetchone()[0])
    raw = bytearray(index.read_bytes())
    assert len(raw) >= 6 * page
    pages = len(raw) // page
    if how == "truncated":
        del raw[(pages - 2) * page :]
    else:  # pages past the first (header and schema) garbled: all, or the middle third
        start, end = (1, pages) if how == "garbled" else (pages // 3, 2 * pages // 3)
        size = (end - start) * page
        raw[start * page : end * page] = bytes((i * 37 + 11) & 0xFF for i in range(size))
    index.write_bytes(bytes(raw))
    return data


@pytest.mark.parametrize("how", ["truncated", "garbled", "garbled in the middle"])
def test_an_index_damaged_past_its_header_gives_unchecked(tmp_path: Path, how: str) -> None:
    data = _damaged_index(tmp_path, how)
    out = tmp_path / "out"
    done = renkei(data, SAMPLE, "--out", str(out))
    assert summary(done) == "新規 0 / 重複 7 / エラー 3"
    assert "RK-IMP009" in done.stderr
    listing = read_csv(one(out, "_評価変更リスト.csv"))
    assert {row[12] for row in listing[1:]} == {"未照合"}


@pytest.mark.parametrize("how", ["truncated", "garbled", "garbled in the middle"])
def test_an_extract_into_an_index_damaged_past_its_header_is_refused(
    tmp_path: Path, how: str
) -> None:
    data = _damaged_index(tmp_path, how)
    done = renkei(data, SAMPLE, "--residents", str(RESIDENTS))
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "RK-IMP010" in done.stderr and "Traceback" not in done.stderr


# --- 5. a refused import leaves no --out folder behind ---------------------------------------


def _hold_batch(data: Path, file: Path) -> TextIO:
    """The batch's lock, as a run importing ``file`` holds it."""
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    lock = data / "imports" / f"{digest[:32]}-{TENANT}.sqlite.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = lock.open("a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


@pytest.mark.parametrize(
    ("reason", "code", "exit_code"),
    [
        ("unknown tenant", "RK-AUT005", 1),
        ("bad layout", "RK-IMP005", 1),
        ("locked file", "RK-IMP013", 1),
        ("bad extract", "RK-IMP008", 2),
    ],
)
def test_a_refused_import_leaves_no_out_folder(
    tmp_path: Path, reason: str, code: str, exit_code: int
) -> None:
    data, out = tmp_path / "data", tmp_path / "new" / "out"
    options = ["--out", str(out)]
    tenant = "999999" if reason == "unknown tenant" else TENANT
    if reason == "bad layout":
        options += ["--layout", "no_such_layout"]
    if reason == "bad extract":
        wrong = tmp_path / "wrong.csv"
        wrong.write_text("番号,名前\n1,高橋 一郎\n", encoding="utf-8")
        options += ["--residents", str(wrong)]
    held = _hold_batch(data, SAMPLE) if reason == "locked file" else None
    try:
        done = renkei(data, SAMPLE, *options, tenant=tenant)
    finally:
        if held is not None:
            held.close()
    assert done.returncode == exit_code, done.stderr
    assert code in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "new").exists()


def test_a_refused_import_leaves_an_existing_out_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = renkei(tmp_path / "data", SAMPLE, "--out", str(out), tenant="999999")
    assert done.returncode == 1 and "RK-AUT005" in done.stderr
    assert out.is_dir() and not list(out.iterdir())


# --- 6. .part files left by a run killed while writing its outputs ---------------------------


def test_a_run_killed_while_writing_outputs_leaves_no_part_file_after_resuming(
    tmp_path: Path,
) -> None:
    notices, data, out = tmp_path / "notices.csv", tmp_path / "data", tmp_path / "out"
    generate(notices, 6000)
    env = {**os.environ, "RENKEI_DATA_DIR": str(data)}
    command = [RENKEI, "import", "notices", str(notices), "--tenant", TENANT, "--out", str(out)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    parts: list[str] = []
    while not parts and time.monotonic() < deadline:
        assert process.poll() is None, "the import finished before it could be killed"
        parts = [n for n in os.listdir(out) if n.endswith(".part")] if out.is_dir() else []
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert parts, "no output was being written"
    assert [n for n in os.listdir(out) if n.endswith(".part")]  # what the kill left
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "新規 6000 / 重複 0 / エラー 0"
    assert not [n for n in os.listdir(out) if n.endswith(".part")]
    listing = read_csv(one(out, "_評価変更リスト.csv"))
    assert len({row[1] for row in listing[1:]}) == 6000
    assert xlsx_rows(one(out, "_評価変更リスト.xlsx")) == listing
    assert len(read_csv(one(out, "_エラー.csv"))) == 1


# --- 7. the --out check: once, before anything is stored -------------------------------------


def test_an_unusable_out_is_refused_before_the_extract_is_loaded(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder", encoding="utf-8")
    data = tmp_path / "data"
    done = renkei(data, SAMPLE, "--residents", str(RESIDENTS), "--out", str(taken))
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.count("RK-IO002") == 1 and "Traceback" not in done.stderr
    index = data / "imports" / "residents.sqlite"
    if index.exists():
        with sqlite3.connect(index) as db:
            assert db.execute("select count(*) from residents").fetchone()[0] == 0
    assert summary(renkei(data, SAMPLE)) == ALL_NEW  # nothing was stored
