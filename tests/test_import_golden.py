"""The staff outputs are byte for byte what they were before the import was made faster: the
trap samples against their kept CSV files, a generated file against the digests of its CSV
files; and the XLSX read back holds the CSV's rows.

After a deliberate change to the outputs, regenerate ``tests/golden/imports`` and the digests
from a run of the changed import (and review the difference)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from openpyxl import load_workbook

from bus.hub import Hub
from bus.imports.generator import generate
from bus.imports.residents import ResidentIndex
from bus.imports.runner import ImportOptions, Summary, run_import
from bus.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NOTICES = ROOT / "samples" / "notices"
GOLDEN = Path(__file__).resolve().parent / "golden" / "imports"
TENANT = "412066"
GENERATED = {  # 1,500 records, seed 11: (評価変更リスト, エラー) CSV sha256
    "utf-8": (
        "bdb8092760e7ee5880521f3f24d5231ca13e696670565f8ad24a1c42b26d7eb1",
        "5a4df592fcd8ae0b98c39be8889eaa665c63041ef90827bddd155379a4897ae6",
    ),
    "cp932": (
        "f6f01156af9d28592a5d5f22a53689aefd77d41fd77d811abb3c8952fcd2e051",
        "c690c3591015df3c316358c450250a3e4500b3a427990b7dc19f9d5dab0f5268",
    ),
}


def _import(tmp_path: Path, path: Path, encoding: str, layout: str | None = None) -> Summary:
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    index = ResidentIndex(tmp_path / "residents.sqlite")
    index.load_extract(NOTICES / "residents-412066.csv", TENANT)
    options = ImportOptions(
        path, TENANT, layout=layout, out_dir=tmp_path / "out", out_encoding=encoding
    )
    try:
        return run_import(hub, options, index)
    finally:
        index.close()
        hub.close()


def _xlsx_rows(path: Path) -> list[list[str]]:
    book = load_workbook(path, read_only=True)
    rows = [
        ["" if v is None else str(v) for v in row]
        for sheet in book.worksheets
        for row in sheet.iter_rows(values_only=True)
    ]
    book.close()
    return rows


def _utf8_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize(
    ("case", "path", "encoding", "layout"),
    [
        ("traps-utf8", NOTICES / "traps-cp932.csv", "utf-8", None),
        ("traps-cp932", NOTICES / "traps-cp932.csv", "cp932", None),
        ("fixed", NOTICES / "traps-fixed-cp932.dat", "utf-8", "houmu_fixed.yaml"),
    ],
)
def test_the_samples_list_as_kept(
    tmp_path: Path, case: str, path: Path, encoding: str, layout: str | None
) -> None:
    summary = _import(tmp_path, path, encoding, layout)
    _, listing, errors = summary.outputs
    assert listing.read_bytes() == (GOLDEN / f"{case}_評価変更リスト.csv").read_bytes()
    assert errors.read_bytes() == (GOLDEN / f"{case}_エラー.csv").read_bytes()
    utf8 = GOLDEN / f"{case.replace('cp932', 'utf8')}_評価変更リスト.csv"
    assert _xlsx_rows(summary.outputs[0]) == _utf8_rows(utf8)


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_a_generated_file_lists_as_kept(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "generated.csv"
    generate(path, 1_500, seed=11)
    summary = _import(tmp_path, path, encoding)
    assert summary.new == 1_500
    _, listing, errors = summary.outputs
    digests = tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (listing, errors))
    assert digests == GENERATED[encoding]
    if encoding == "utf-8":
        rows = _xlsx_rows(summary.outputs[0])
        assert len(rows) > 1_500 and rows == _utf8_rows(listing)
