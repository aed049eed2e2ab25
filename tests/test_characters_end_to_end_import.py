"""Residents' names through `renkei import notices` (a real run of the CLI): an IVS
(葛󠄀 = 葛 U+E0100) is the same character as its base, so a 法務局 notice and a 宛名 extract that
differ only by a variation selector are the same name for 名寄せ, in either direction."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.imports.normalize import fold_text, name_key

from .conftest import SAMPLE_CONFIG_DIR

RENKEI = str(Path(sys.executable).with_name("renkei"))
TENANT = "412066"
NOTICE_HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,"
    "家屋番号,種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)
IVS = "\U000e0100"


def _notice(number: int, address: str, name: str, kana: str) -> str:
    return (
        f"令和6年4月3日,{number},所有権移転,令和6年3月25日売買,41000000{number:05d},"
        f"武雄市武雄町大字富岡字下町,{number}番,宅地,215.33,,,,{address},{name},{kana},,,"
    )


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_a_variation_selector_does_not_make_another_owner(tmp_path: Path, encoding: str) -> None:
    notices = tmp_path / "notices.csv"
    notices.write_text(
        "\r\n".join(
            [
                NOTICE_HEADER,
                # the notice has the IVS, the register has the bare character
                _notice(
                    3001,
                    "佐賀県武雄市武雄町大字富岡1234番地",
                    f"葛{IVS}飾　太郎",
                    "カツシカ　タロウ",
                ),
                # the register has the IVS, the notice the bare character
                _notice(3002, "佐賀県武雄市武雄町大字富岡5番地", "辻　花子", "ツジ　ハナコ"),
            ]
        )
        + "\r\n",
        encoding="utf-8",
        newline="",
    )
    residents = tmp_path / "residents.csv"
    residents.write_text(
        "宛名番号,氏名,氏名カナ,住所,住民種別,住民状態,法人番号\r\n"
        "1000000001,葛飾　太郎,カツシカ　タロウ,佐賀県武雄市武雄町大字富岡1234番地,1,1,\r\n"
        f"1000000002,辻{IVS}　花子,ツジ　ハナコ,佐賀県武雄市武雄町大字富岡5番地,1,1,\r\n",
        encoding="utf-8",
        newline="",
    )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
        "COLUMNS": "400",
    }
    env.pop("RENKEI_DATABASE_URL", None)
    options = ["--residents", str(residents), "--out", str(out), "--encoding", encoding]
    done = subprocess.run(
        [RENKEI, "import", "notices", str(notices), "--tenant", TENANT, *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [listing] = out.glob("*_評価変更リスト.csv")
    read = "utf-8-sig" if encoding == "utf-8" else "cp932"
    rows = list(csv.DictReader(listing.read_text(encoding=read).splitlines()))
    found = {row["受付番号"]: row for row in rows}
    assert found["3001"]["照合結果"] == "一致", rows
    assert found["3001"]["宛名番号"] == "1000000001"
    assert found["3002"]["照合結果"] == "一致", rows
    assert found["3002"]["宛名番号"] == "1000000002"
    # the listed (normalised) name is the base character: no 〓 for the selector in CP932
    assert found["3001"]["権利者"] == "葛飾 太郎"


def test_variation_selectors_fold_like_variant_kanji() -> None:
    assert name_key(f"葛{IVS}飾　太郎") == name_key("葛飾 太郎")
    assert name_key("辻\ufe00") == name_key("辻")  # a standardized variation sequence too
    assert fold_text(f"髙{IVS}橋") == "高橋"
