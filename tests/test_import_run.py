"""Batch import end to end: the trap sample through the hub, outputs, re-import, resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from bus.hub import Hub
from bus.imports.chunk_work import StoreUnwritable
from bus.imports.generator import generate
from bus.imports.outputs import LIST_COLUMNS, write_xlsx
from bus.imports.residents import ResidentIndex
from bus.imports.runner import ImportOptions, run_import
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.settings import Settings
from bus.store.models import Delivery, StoredMessage
from tests.support.imports import cursor_line
from tests.support.page_limit import PageLimit

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "notices" / "traps-cp932.csv"
RESIDENTS = ROOT / "samples" / "notices" / "residents-412066.csv"
TENANT = "412066"


def output(out: Path, suffix: str) -> Path:
    """The one output in ``out`` whose name ends with ``suffix`` (the names carry the tenant
    and the file's short hash)."""
    [found] = [p for p in out.iterdir() if p.name.endswith(suffix)]
    return found


def read_csv(path: Path, encoding: str = "utf-8-sig") -> list[list[str]]:
    raw = path.read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.reader(handle))


def test_the_trap_sample_imports_and_reimports(tmp_path: Path) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    index = ResidentIndex(tmp_path / "residents.sqlite")
    index.load_extract(RESIDENTS, TENANT)
    out = tmp_path / "out"
    try:
        first = run_import(hub, ImportOptions(SAMPLE, TENANT, out_dir=out), index)
        assert (first.new, first.duplicate, first.errors, first.encoding) == (6, 1, 3, "cp932")
        with hub.store.sessions() as session:
            stored = session.scalar(
                select(func.count())
                .select_from(StoredMessage)
                .where(StoredMessage.service == "RegistrationNotice")
            )
            destinations = set(session.scalars(select(Delivery.destination)))
        assert stored == 6 and destinations == {"kotei"}
        again = run_import(hub, ImportOptions(SAMPLE, TENANT, out_dir=out), index)
        assert (again.new, again.duplicate, again.errors) == (0, 7, 3)
    finally:
        index.close()
        hub.close()

    errors = read_csv(output(out, "_エラー.csv"))
    assert errors[0] == ["行", "バイト位置", "項目", "コード", "メッセージ", "message"]
    assert [(r[0], r[2], r[3]) for r in errors[1:]] == [
        ("7", "", "RK-IMP001"), ("8", "", "RK-IMP002"), ("9", "受付年月日", "RK-IMP003"),
    ]  # fmt: skip
    assert SAMPLE.read_bytes()[int(errors[1][1]) :].startswith("令和6年4月10日".encode("cp932"))
    assert "7 行目を cp932 として読めません" in errors[1][4] and "Line 7" in errors[1][5]

    listing = read_csv(output(out, "_評価変更リスト.csv"))
    assert tuple(listing[0]) == LIST_COLUMNS
    rows = [dict(zip(LIST_COLUMNS, r, strict=True)) for r in listing[1:]]
    by_name = {(r["受付番号"], r["権利者"]): r for r in rows}
    assert len([r for r in rows if r["受付番号"] == "1001"]) == 2  # the repeated line listed once
    assert by_name[("1001", "高橋 一郎")]["照合結果"] == "一致"  # 髙 (0xFBFC / 0xEEE0) → 高
    assert by_name[("1001", "山崎 花子")]["宛名番号"] == "1000000006"  # 﨑 → 崎
    assert by_name[("1002", "斎藤 太郎")]["宛名番号"] == "1000000002"  # 齋 → 斎, never 斉
    assert by_name[("1002", "斎藤 花子")]["照合結果"] == "候補複数"
    assert by_name[("1002", "斎藤 花子")]["持分"] == "1/2"  # written ２分の１
    assert "半角カナ" in by_name[("1003", "斉藤 次郎")]["要確認理由"]
    assert "登記原因が空" in by_name[("1003", "斉藤 次郎")]["要確認理由"]
    assert by_name[("1003", "斉藤 次郎")]["地目/種類"] == "居宅①"
    assert by_name[("1003", "斉藤 次郎")]["照合結果"] == "一致"  # ～ and 〜 in the address
    corporate = next(r for r in rows if r["受付番号"] == "1004" and r["区分"] == "権利者")
    assert (corporate["照合結果"], corporate["宛名番号"]) == ("一致", "2000000001")
    assert "所在が団体外" in corporate["要確認理由"]
    gaiji = next(r for r in rows if r["受付番号"] == "1005")
    assert "\ue000" in gaiji["権利者"] and "外字（変換表なし）" in gaiji["要確認理由"]
    assert gaiji["照合結果"] == "住登外"
    assert "地目を読めないため空で取込み" in by_name[("1009", "山田 太郎")]["要確認理由"]
    # 大字 after the town (旧町 included, 大字/字 marks and 小字 left out) → 地番 → 受付番号
    places = list(dict.fromkeys(r["所在"] for r in rows))
    assert places == [
        "武雄市北方町大字志久", "武雄市山内町大字宮野", "武雄市朝日町大字甘久",
        "武雄市武雄町大字富岡字下町", "武雄市武雄町大字武雄", "鹿島市大字高津原",
    ]  # fmt: skip

    book = load_workbook(output(out, "_評価変更リスト.xlsx"), read_only=True)
    sheet = book["評価変更リスト"]
    cells = [
        ["" if c is None else str(c) for c in row] for row in sheet.iter_rows(values_only=True)
    ]
    assert cells == listing
    book.close()


def test_cp932_outputs_and_a_new_sheet_before_the_limit(tmp_path: Path) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        options = ImportOptions(SAMPLE, TENANT, out_dir=tmp_path, out_encoding="cp932")
        run_import(hub, options)
    finally:
        hub.close()
    listing = read_csv(output(tmp_path, "_評価変更リスト.csv"), "cp932")
    assert {r[12] for r in listing[1:]} == {"未照合"}  # no resident data: still imported
    path = tmp_path / "split.xlsx"
    assert write_xlsx(path, ([str(n)] for n in range(5)), sheet_rows=3) == 5
    book = load_workbook(path, read_only=True)
    assert book.sheetnames == ["評価変更リスト", "評価変更リスト2", "評価変更リスト3"]
    assert [r[0] for r in book["評価変更リスト2"].iter_rows(values_only=True)] == [
        "受付年月日",
        "2",
        "3",
    ]
    book.close()


def test_the_index_is_fed_by_resident_change_notices(tmp_path: Path) -> None:
    from bus.catalogue import NS_STANDARD
    from bus.imports.matching import Outcome, Owner, OwnerMatcher

    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        document = build_message(MessageSpec("ResidentChangeNotice", 3))
        values = {
            "localGovernmentCode": TENANT, "name": "髙橋　一郎", "residentStatus": "1",
            "address": "佐賀県武雄市武雄町大字富岡1234番地", "residentType": "1",
        }  # fmt: skip
        for name, value in values.items():
            element = document.find(f".//{{{NS_STANDARD}}}{name}")
            assert element is not None
            element.text = value
        tenant = document.find(".//{urn:renkei:platform:envelope:1}tenant")
        assert tenant is not None
        tenant.text = TENANT
        message = hub.ingest(serialize(document), adapter="test", source_address="127.0.0.1")
        assert message.ack is not None, [f.message_en for f in message.findings]
        assert index.refresh(hub.store.sessions, TENANT) == 1
        assert index.refresh(hub.store.sessions, TENANT) == 0  # incremental
        owner = Owner("権利者", "高橋 一郎", "", "武雄市武雄町富岡１２３４番地")
        assert OwnerMatcher(index, TENANT, "武雄市").match(owner).outcome is Outcome.MATCHED
    finally:
        index.close()
        hub.close()


def test_a_killed_import_resumes_where_it_stopped(tmp_path: Path) -> None:
    notices = tmp_path / "notices.csv"
    generate(notices, 2000)
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data")}
    renkei = str(Path(sys.executable).with_name("renkei"))
    command = [renkei, "import", "notices", str(notices)]
    command += ["--tenant", TENANT]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while cursor_line(tmp_path / "data" / "imports") <= 1 and time.monotonic() < deadline:
        assert process.poll() is None, "the import finished before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = cursor_line(tmp_path / "data" / "imports")
    assert 1 < killed_at < 2002
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert resumed.stdout.strip().splitlines()[-1] == "新規 2000 / 重複 0 / エラー 0"
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert again.stdout.strip().splitlines()[-1] == "新規 0 / 重複 2000 / エラー 0"
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        with hub.store.sessions() as session:
            count = session.scalar(select(func.count()).select_from(StoredMessage))
        assert count == 2000
    finally:
        hub.close()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_utf8_files_with_and_without_bom(tmp_path: Path, encoding: str) -> None:
    notices = tmp_path / "notices.csv"
    generate(notices, 20, encoding=encoding)
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        summary = run_import(hub, ImportOptions(notices, TENANT))
    finally:
        hub.close()
    assert (summary.new, summary.errors, summary.encoding) == (20, 0, "utf-8")


def test_a_line_csv_cannot_split_is_a_record_error(tmp_path: Path) -> None:
    """A bare CR in an unquoted field (a Mac line end inside a record): that line is refused
    RK-IMP006, its neighbours are imported, the import goes on."""
    notices = tmp_path / "notices.csv"
    generate(notices, 5, encoding="utf-8")
    lines = notices.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b"\r,", 1)  # the third record (after the header)
    notices.write_bytes(b"\n".join(lines))
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        summary = run_import(hub, ImportOptions(notices, TENANT, out_dir=tmp_path / "out"))
    finally:
        hub.close()
    assert (summary.new, summary.errors) == (4, 1)
    errors = read_csv(output(tmp_path / "out", "_エラー.csv"))
    assert [(row[0], row[3]) for row in errors[1:]] == [("4", "RK-IMP006")]


def test_a_fixed_width_layout_imports_through_the_cli(tmp_path: Path) -> None:
    """The fixed-width layout is another mapping file (CP932, byte-counted, OCCURS slots for
    権利者/義務者): the same import, the same checks, the same outputs."""
    fixed = ROOT / "samples" / "notices" / "traps-fixed-cp932.dat"
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data")}
    renkei = str(Path(sys.executable).with_name("renkei"))
    command = [renkei, "import", "notices", str(fixed), "--tenant", TENANT]
    command += ["--layout", "mappings/houmu_fixed.yaml", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "新規 5 / 重複 0 / エラー 2"
    errors = read_csv(output(tmp_path / "out", "_エラー.csv"))
    assert [(row[0], row[3]) for row in errors[1:]] == [("7", "RK-IMP003"), ("8", "RK-IMP014")]
    assert "500 バイト" in errors[2][4] and "(1100 bytes expected)" in errors[2][5]
    rows = read_csv(output(tmp_path / "out", "_評価変更リスト.csv"))
    column = {name: index for index, name in enumerate(rows[0])}
    holders = [(r[column["受付番号"]], r[column["権利者"]], r[column["持分"]]) for r in rows[1:]]
    assert ("1002", "斎藤 太郎", "1/2") in holders and ("1002", "斎藤 花子", "1/2") in holders
    gaiji = next(r for r in rows[1:] if r[column["受付番号"]] == "1005")
    assert "外字（変換表なし）" in gaiji[column["要確認理由"]]
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert again.stdout.strip().splitlines()[-1] == "新規 0 / 重複 5 / エラー 2"


def test_an_import_into_a_full_store_stops_and_resumes_once_there_is_room(
    tmp_path: Path,
) -> None:
    """A full store is not a record error: the import stops with RK-IMP015 before its cursor
    passes the chunk (no record counted as an error), and the same run again, once there is
    room, imports every record — as after a kill."""
    notices = tmp_path / "notices.csv"
    generate(notices, 2_500)
    hub = Hub.open(Settings(data_dir=tmp_path / "data", dispatch_workers=0))
    limit = PageLimit(hub)
    try:
        limit.freeze()  # no page beyond those of the empty store
        with pytest.raises(StoreUnwritable) as stopped:
            run_import(hub, ImportOptions(notices, TENANT))
        assert stopped.value.finding.code == "RK-IMP015"
        with hub.store.sessions() as session:
            assert session.scalar(select(func.count()).select_from(StoredMessage)) == 0
        limit.lift()
        limit.remove()
        summary = run_import(hub, ImportOptions(notices, TENANT))
        assert (summary.new, summary.errors) == (2_500, 0)
    finally:
        hub.close()
