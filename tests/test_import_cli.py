"""`renkei import notices` refusing what it cannot use, before anything is imported: coded
bilingual findings and exit 2, never a traceback; an unreadable resident index only warns."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bus.imports.layout import ImportRefused, load_section
from bus.imports.residents import ExtractRefused, ResidentIndex
from bus.mapping.formats.fixed import FixedFormat

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "notices" / "traps-cp932.csv"
RESIDENTS = ROOT / "samples" / "notices" / "residents-412066.csv"
TENANT = "412066"
RENKEI = str(Path(sys.executable).with_name("renkei"))
ALL_NEW = "新規 6 / 重複 1 / エラー 3"  # the trap sample into an empty hub


def renkei(data: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [RENKEI, "import", "notices", str(SAMPLE), "--tenant", TENANT, *options]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "COLUMNS": "400"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def summary(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def refused(done: subprocess.CompletedProcess[str], code: str) -> None:
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert code in done.stderr and "Traceback" not in done.stderr
    assert "/ The" in done.stderr  # Japanese, then English


def matching(out: Path, encoding: str = "utf-8-sig") -> set[str]:
    [listing] = out.glob("traps-cp932_*_評価変更リスト.csv")
    with listing.open(encoding=encoding, newline="") as handle:
        return {row["照合結果"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc/foo"])
def test_an_unusable_out_folder_is_refused_before_importing(tmp_path: Path, where: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"a file": afile, "under a file": afile / "sub", "/proc/foo": Path("/proc/foo")}
    refused(renkei(tmp_path / "data", "--out", str(out[where])), "RK-IO002")
    done = renkei(tmp_path / "data", "--out", str(tmp_path / "new" / "out"))
    assert summary(done) == ALL_NEW  # the refused run stored nothing
    assert len(list((tmp_path / "new" / "out").glob("traps-cp932_*_評価変更リスト.xlsx"))) == 1


@pytest.mark.parametrize("problem", ["missing", "a folder", "wrong columns"])
def test_an_unusable_extract_is_refused_before_importing(tmp_path: Path, problem: str) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("番号,名前\n1,高橋 一郎\n", encoding="utf-8")
    given = {"missing": tmp_path / "none.csv", "a folder": tmp_path, "wrong columns": wrong}
    code = "RK-IMP008" if problem == "wrong columns" else "RK-IO001"
    refused(renkei(tmp_path / "data", "--residents", str(given[problem])), code)
    assert summary(renkei(tmp_path / "data")) == ALL_NEW


def test_a_cp932_extract_through_the_cli(tmp_path: Path) -> None:
    extract = tmp_path / "residents.csv"
    extract.write_bytes(RESIDENTS.read_text(encoding="utf-8").encode("cp932"))
    out = tmp_path / "out"
    options = ("--residents", str(extract), "--out", str(out))
    assert summary(renkei(tmp_path / "data", *options)) == ALL_NEW
    assert "一致" in matching(out)


def test_the_output_encoding_in_capitals(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = renkei(tmp_path / "data", "--out", str(out), "--encoding", "CP932")
    assert summary(done) == ALL_NEW
    assert matching(out, "cp932") == {"未照合"}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932"])
def test_the_extract_is_read_in_any_of_its_encodings(tmp_path: Path, encoding: str) -> None:
    extract = tmp_path / "residents.csv"
    extract.write_bytes(RESIDENTS.read_text(encoding="utf-8").encode(encoding))
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        loaded = index.load_extract(extract, TENANT)
        assert loaded == index.count(TENANT) == len(RESIDENTS.read_text().splitlines()) - 1
        assert [r.addressee_number for r in index.find(TENANT, "name_key", "高橋一郎")]
    finally:
        index.close()


def test_a_short_extract_row_is_loaded_with_empty_cells(tmp_path: Path) -> None:
    extract = tmp_path / "residents.csv"
    extract.write_text("宛名番号,氏名,住所\n1000000001\n", encoding="utf-8")
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        assert index.load_extract(extract, TENANT) == 1
    finally:
        index.close()


def test_a_corrupt_index_gives_unchecked_and_refuses_an_extract(tmp_path: Path) -> None:
    """An index file overwritten with garbage: the import goes on, every owner 未照合, with
    a warning; loading an extract into it is refused (RK-IMP010), nothing imported."""
    data = tmp_path / "data"
    (data / "imports").mkdir(parents=True)
    garbage = bytes(range(256)) * 20
    (data / "imports" / "residents.sqlite").write_bytes(garbage)
    refused(renkei(data, "--residents", str(RESIDENTS)), "RK-IMP010")
    done = renkei(data, "--out", str(tmp_path / "out"))
    assert summary(done) == ALL_NEW
    assert "RK-IMP009" in done.stderr and "Traceback" not in done.stderr
    assert matching(tmp_path / "out") == {"未照合"}
    index = ResidentIndex(data / "imports" / "residents.sqlite")
    try:
        assert index.unreadable is not None and index.count(TENANT) == 0
        with pytest.raises(ExtractRefused) as caught:
            index.load_extract(RESIDENTS, TENANT)
        assert caught.value.finding.code == "RK-IMP010"
    finally:
        index.close()
    assert (data / "imports" / "residents.sqlite").read_bytes() == garbage  # left as it was


@pytest.mark.parametrize("layout", ["houmu_fixed", "houmu_fixed.yaml", "mappings/houmu_fixed.yaml"])
def test_a_layout_is_a_file_here_or_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """A path that exists from the current folder is used as given; otherwise a bare name,
    with or without .yaml, is a shipped mapping; anything else is refused (RK-IMP005)."""
    monkeypatch.chdir(tmp_path)
    if "/" in layout:
        with pytest.raises(ImportRefused) as caught:
            load_section(layout)
        assert caught.value.finding.code == "RK-IMP005"
        assert "no such file" in caught.value.finding.message_en
        shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    assert isinstance(load_section(layout).format, FixedFormat)  # not the default CSV layout


def test_a_broken_layout_is_refused_with_the_mapping_code(tmp_path: Path) -> None:
    """A layout file with a mistake is refused before anything is read (RK-IMP005), saying
    what mapping check would say: the load error's code and where it is."""
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "mappings" / "houmu_fixed.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace("system: houmu", "system: houmu\nsystme: typo", 1), "utf-8")
    with pytest.raises(ImportRefused) as caught:
        load_section(str(broken))
    assert caught.value.finding.code == "RK-IMP005"
    assert "RK-MAP014" in caught.value.finding.message_en
    assert "broken.yaml:" in caught.value.finding.message_en


def test_more_jobs_than_cpus_are_cut_to_the_cpus(tmp_path: Path) -> None:
    """30 jobs on 2 CPUs took 3.4 GB and four times as long; the command says it uses the
    CPUs there are and imports as usual."""
    cpus = len(os.sched_getaffinity(0))
    done = renkei(tmp_path / "data", "--jobs", str(cpus + 5))
    assert summary(done) == ALL_NEW
    assert f"--jobs {cpus + 5} is more than the {cpus} CPUs available" in done.stderr
