"""What the hub refuses in a notice file: only the three kinds of record error stop a record
(a value the hub cannot take in another column is imported empty and flagged 要確認), a
header row naming the columns in another order stops the import before anything is stored,
and a notice whose key was imported with other content is reported as such."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from bus.hub import Hub
from bus.imports.generator import generate
from bus.imports.layout import ImportRefused
from bus.imports.runner import ImportOptions, Summary, file_hash, run_import
from bus.imports.worklist import Worklist
from bus.settings import Settings
from bus.store.models import StoredMessage

TENANT = "412066"
ROOT = Path(__file__).resolve().parent.parent


def rows_of(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)


def notices(tmp_path: Path, count: int, name: str = "notices.csv") -> tuple[Path, list[list[str]]]:
    path = tmp_path / name
    generate(path, count, encoding="utf-8")
    return path, rows_of(path)


def run(tmp_path: Path, path: Path) -> tuple[Summary, int]:
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        summary = run_import(hub, ImportOptions(path, TENANT, out_dir=tmp_path / "out"))
        with hub.store.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(StoredMessage)) or 0
    finally:
        hub.close()
    return summary, stored


def test_values_the_hub_refuses_are_imported_empty_and_flagged(tmp_path: Path) -> None:
    """地積 "abc" or "-5" (the XSD's area type) and a co-owner without a name (required in
    the group) used to make the whole record an RK-IMP004 error."""
    path, rows = notices(tmp_path, 4)
    header = rows[0]
    area, name = header.index("地積"), header.index("権利者氏名")
    rows[1][area], rows[2][area], rows[3][name] = "abc", "-5", ""
    write_rows(path, rows)
    summary, stored = run(tmp_path, path)
    assert (summary.new, summary.errors, stored) == (4, 0, 4)
    listed = rows_of(next((tmp_path / "out").glob("notices_*_評価変更リスト.csv")))
    reasons = {row[1]: row[-1] for row in listed[1:]}
    number = header.index("受付番号")
    assert "地積を読めないため空で取込み" in reasons[rows[1][number]]
    assert "地積を読めないため空で取込み" in reasons[rows[2][number]]
    assert "権利者氏名を読めないため空で取込み" in reasons[rows[3][number]]
    assert "地積を読めないため空で取込み" not in reasons[rows[4][number]]


def test_a_reordered_header_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    path, rows = notices(tmp_path, 3)
    for row in rows:  # 権利者住所 and 権利者氏名 swapped, header and records alike
        row[12], row[13] = row[13], row[12]
    write_rows(path, rows)
    with pytest.raises(ImportRefused) as refused:
        run(tmp_path, path)
    assert refused.value.finding.code == "RK-IMP012"
    assert "13: 権利者氏名 ≠ 権利者住所" in refused.value.finding.message_en
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        with hub.store.sessions() as session:
            assert session.scalar(select(func.count()).select_from(StoredMessage)) == 0
    finally:
        hub.close()


def test_a_header_with_stray_spaces_is_still_the_header(tmp_path: Path) -> None:
    path, rows = notices(tmp_path, 3)
    rows[0] = [f" {column} " for column in rows[0]]
    write_rows(path, rows)
    summary, stored = run(tmp_path, path)
    assert (summary.new, summary.errors, stored) == (3, 0, 3)


def test_a_key_imported_with_other_content_is_reported_as_such(tmp_path: Path) -> None:
    path, rows = notices(tmp_path, 2)
    run(tmp_path, path)
    cause = rows[0].index("登記原因及びその日付")
    rows[2][cause] = "令和6年4月6日錯誤"  # the same key, another 登記原因
    corrected = tmp_path / "corrected.csv"
    write_rows(corrected, rows)
    summary, stored = run(tmp_path, corrected)
    assert (summary.new, summary.duplicate, summary.errors, stored) == (0, 1, 1, 2)
    [error] = rows_of(next((tmp_path / "out").glob("corrected_*_エラー.csv")))[1:]
    assert (error[0], error[3]) == ("3", "RK-IMP011")
    assert int(error[1]) > 0  # the line's byte offset


def test_a_file_being_imported_is_refused_to_a_second_run(tmp_path: Path) -> None:
    """Two runs of one file at once both wrote every list row into the batch's work file
    (the lists came out with each row twice); the second now stops at once, RK-IMP013."""
    path, _rows = notices(tmp_path, 3)
    digest = file_hash(path)
    work = tmp_path / "data" / "imports" / f"{digest[:32]}-{TENANT}.sqlite"
    running = Worklist(work, digest, TENANT, "utf-8")  # another run holds the batch
    try:
        with pytest.raises(ImportRefused) as refused:
            run(tmp_path, path)
        assert refused.value.finding.code == "RK-IMP013"
    finally:
        running.close()
    summary, stored = run(tmp_path, path)
    assert (summary.new, stored) == (3, 3)


@pytest.mark.parametrize(
    ("tenant", "code"),
    [("412066", "RK-AUT005"), ("410004", "RK-AUT003")],  # disabled; 佐賀県 not served by houmu
)
def test_a_tenant_the_hub_refuses_stops_the_import_at_once(
    tmp_path: Path, tenant: str, code: str
) -> None:
    """Each record used to be refused on its own (エラー N, exit 0) for a disabled tenant or
    one the 法務局 system does not act for."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "samples" / "config", config)
    tenants = config / "tenants.yaml"
    document = yaml.safe_load(tenants.read_text(encoding="utf-8"))
    for entry in document["tenants"]:
        if entry["code"] == "412066":
            entry["enabled"] = False
    tenants.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    path, _rows = notices(tmp_path, 2)
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        with pytest.raises(ImportRefused) as refused:
            run_import(hub, ImportOptions(path, tenant))
    finally:
        hub.close()
    assert refused.value.finding.code == code
    assert tenant in refused.value.finding.message_ja + refused.value.finding.message_en


def test_an_unusable_out_folder_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    """For a caller of run_import too (the command checks it first): the records used to be
    stored and the outputs then failed, so the next run found them all 重複."""
    path, _rows = notices(tmp_path, 2)
    (tmp_path / "taken").write_text("a file, not a folder", encoding="utf-8")
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        with pytest.raises(ImportRefused) as refused:
            run_import(hub, ImportOptions(path, TENANT, out_dir=tmp_path / "taken"))
        with hub.store.sessions() as session:
            assert session.scalar(select(func.count()).select_from(StoredMessage)) == 0
    finally:
        hub.close()
    assert refused.value.finding.code == "RK-IO002"
