"""The resident index keeps the key version its rows were normalised with: an index built by
an older renkei (its keys made the old way) still matches, with a coded warning (RK-IMP017)
saying how to rebuild it, and an import with the 宛名 extract rebuilds it — through the real
``renkei import notices``."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from bus.hub import Hub
from bus.imports.residents import KEY_VERSION, ResidentIndex
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.settings import Settings

TENANT = "412066"  # 武雄市
RENKEI = str(Path(sys.executable).with_name("renkei"))
HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,"
    "家屋番号,種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)
CORPORATION = "2000000009"  # the extract's (福)武雄会
EXTRACT = (
    "宛名番号,氏名,氏名カナ,住所,住民種別,住民状態,法人番号\n"
    "1000000001,高橋　一郎,タカハシ　イチロウ,佐賀県武雄市武雄町大字富岡1234番地,1,1,\n"
    f"{CORPORATION},(福)武雄会,,佐賀県武雄市武雄町大字武雄1番地,1,1,\n"
)


def notices(folder: Path, receipt: int) -> Path:
    """A person and a 社会福祉法人 (written out in full), each an owner the extract holds."""
    lines = [
        HEADER,
        f"令和6年4月3日,{receipt},所有権移転,令和6年3月25日売買,4100000000011,"
        "武雄市武雄町大字富岡,1234番,宅地,215.33,,,,佐賀県武雄市武雄町大字富岡1234番地,"
        "高橋　一郎,タカハシ　イチロウ,,,",
        f"令和6年4月3日,{receipt + 1},所有権移転,令和6年3月25日売買,4100000000028,"
        "武雄市武雄町大字武雄,1番,宅地,100,,,,佐賀県武雄市武雄町大字武雄1番地,"
        "社会福祉法人武雄会,,,,",
    ]
    path = folder / f"notices-{receipt}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def renkei(data: Path, file: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [RENKEI, "import", "notices", str(file), "--tenant", TENANT, *options]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "COLUMNS": "400"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done


def outcomes(out: Path) -> dict[str, str]:
    """権利者 → 照合結果 in the list."""
    [listing] = out.glob("*_評価変更リスト.csv")
    with listing.open(encoding="utf-8-sig", newline="") as handle:
        return {row["権利者"]: row["照合結果"] for row in csv.DictReader(handle)}


def versions(index: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(index) as db:
        return db.execute("select tenant, version from key_versions").fetchall()


def built_by_an_older_renkei(index: Path) -> None:
    """What a renkei before key versions left: no version kept, and the 社会福祉法人 written
    (福) stored as no corporation (its forms were not read then)."""
    db = sqlite3.connect(index)
    try:
        with db:
            db.execute("drop table key_versions")
            db.execute(
                "update residents set corporate_key = '', corporate_bare = ''"
                " where addressee_number = ?",
                (CORPORATION,),
            )
    finally:
        db.close()


def test_an_index_built_by_an_older_renkei_warns_and_an_extract_rebuilds_it(
    tmp_path: Path,
) -> None:
    data, extract = tmp_path / "data", tmp_path / "residents.csv"
    extract.write_text(EXTRACT, encoding="utf-8")
    index = data / "imports" / "residents.sqlite"
    built = renkei(data, notices(tmp_path, 1001), "--residents", str(extract))
    assert "RK-IMP017" not in built.stderr
    assert versions(index) == [(TENANT, KEY_VERSION)]

    built_by_an_older_renkei(index)
    old = renkei(data, notices(tmp_path, 2001), "--out", str(tmp_path / "old"))
    shown = "".join(old.stderr.split())  # the console wraps long lines
    assert "RK-IMP017" in shown and "/Theresidentindexwasbuilt" in shown
    assert "宛名抽出ファイルを付けて（--residents）取り込むと索引を作り直します" in shown
    # matching still runs: the person is found, the 社会福祉法人 missed (never a false 一致)
    assert outcomes(tmp_path / "old") == {"高橋 一郎": "一致", "社会福祉法人武雄会": "不一致"}

    rebuilt = renkei(
        data, notices(tmp_path, 3001), "--residents", str(extract), "--out", str(tmp_path / "new")
    )
    assert "RK-IMP017" not in rebuilt.stderr
    assert outcomes(tmp_path / "new") == {"高橋 一郎": "一致", "社会福祉法人武雄会": "一致"}
    assert versions(index) == [(TENANT, KEY_VERSION)]
    again = renkei(data, notices(tmp_path, 4001))
    assert "RK-IMP017" not in again.stderr


def test_an_older_version_number_is_outdated_too(tmp_path: Path) -> None:
    data, extract = tmp_path / "data", tmp_path / "residents.csv"
    extract.write_text(EXTRACT, encoding="utf-8")
    index = data / "imports" / "residents.sqlite"
    renkei(data, notices(tmp_path, 1001), "--residents", str(extract))
    with sqlite3.connect(index) as db:
        db.execute("update key_versions set version = ?", (KEY_VERSION - 1,))
    db.close()
    old = renkei(data, notices(tmp_path, 2001))
    assert "RK-IMP017" in old.stderr
    shown = "".join(old.stderr.split())  # the console wraps long lines
    assert f"keyversion{KEY_VERSION - 1},current{KEY_VERSION}" in shown


def test_an_index_fed_only_by_resident_change_notices_is_current(tmp_path: Path) -> None:
    """A new index fed by the stored 住民異動通知 alone (no extract) is built with the
    current keys: no warning."""
    data = tmp_path / "data"
    _store_resident_change_notice(data)
    done = renkei(data, notices(tmp_path, 1001), "--out", str(tmp_path / "out"))
    assert "RK-IMP017" not in done.stderr
    assert outcomes(tmp_path / "out")["高橋 一郎"] == "一致"
    assert versions(data / "imports" / "residents.sqlite") == [(TENANT, KEY_VERSION)]


def test_a_rebuild_reads_the_stored_resident_change_notices_again(tmp_path: Path) -> None:
    """The rebuild replaces the tenant's rows with the extract's: a 宛名 known only from a
    stored 住民異動通知 is read again from the hub (no replay needed), not lost."""
    data, extract = tmp_path / "data", tmp_path / "residents.csv"
    extract.write_text(EXTRACT.replace("1000000001,高橋　一郎", "1000000002,高橋　二郎"))
    number = _store_resident_change_notice(data)  # 高橋 一郎
    index = data / "imports" / "residents.sqlite"
    renkei(data, notices(tmp_path, 1001))
    built_by_an_older_renkei(index)
    renkei(data, notices(tmp_path, 2001), "--residents", str(extract), "--out", str(tmp_path / "o"))
    assert outcomes(tmp_path / "o") == {"高橋 一郎": "一致", "社会福祉法人武雄会": "一致"}
    found = ResidentIndex(index)
    try:
        assert found.outdated(TENANT) is None
        assert [r.addressee_number for r in found.find(TENANT, "name_key", "高橋一郎")] == [number]
    finally:
        found.close()


def test_an_extract_refused_midway_leaves_the_old_index_as_it_was(tmp_path: Path) -> None:
    """A rebuild is all or nothing: an extract with a bad row keeps the old rows (and the
    warning), not an emptied index."""
    data, extract = tmp_path / "data", tmp_path / "residents.csv"
    extract.write_text(EXTRACT, encoding="utf-8")
    index = data / "imports" / "residents.sqlite"
    renkei(data, notices(tmp_path, 1001), "--residents", str(extract))
    built_by_an_older_renkei(index)
    bad = tmp_path / "bad.csv"
    bad.write_text(EXTRACT + "1000000003,佐藤　三郎,,,9,1,\n", encoding="utf-8")
    command = [RENKEI, "import", "notices", str(notices(tmp_path, 2001)), "--tenant", TENANT]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "COLUMNS": "400"}
    refused = subprocess.run(
        [*command, "--residents", str(bad)], env=env, capture_output=True, text=True, timeout=180
    )
    assert refused.returncode == 2 and "RK-IMP016" in refused.stderr, refused.stderr
    found = ResidentIndex(index)
    try:
        assert found.count(TENANT) == 2 and found.outdated(TENANT) == 0
    finally:
        found.close()


def _store_resident_change_notice(
    data: Path, address: str = "佐賀県武雄市武雄町大字富岡1234番地"
) -> str:
    """高橋 一郎 as a 住民異動通知 stored in the hub; returns his 宛名番号."""
    from bus.catalogue import NS_STANDARD

    hub = Hub.open(Settings(data_dir=data))
    try:
        document = build_message(MessageSpec("ResidentChangeNotice", 3))
        values = {
            "localGovernmentCode": TENANT, "name": "髙橋　一郎", "residentStatus": "1",
            "address": address, "residentType": "1",
        }  # fmt: skip
        for name, value in values.items():
            element = document.find(f".//{{{NS_STANDARD}}}{name}")
            assert element is not None, name
            element.text = value
        tenant = document.find(".//{urn:renkei:platform:envelope:1}tenant")
        assert tenant is not None
        tenant.text = TENANT
        message = hub.ingest(serialize(document), adapter="test", source_address="127.0.0.1")
        assert message.ack is not None, [f.message_en for f in message.findings]
        return document.findtext(f".//{{{NS_STANDARD}}}addresseeNumber") or ""
    finally:
        hub.close()
