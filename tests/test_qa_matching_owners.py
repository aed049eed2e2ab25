"""QA of owner matching (名寄せ): adversarial owners and 宛名 extracts, through the matcher and
through `renkei import notices`. A false 一致 sends a tax notice to the wrong person, so each
case here is one that matched someone it must not, or missed what the issue asks for."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.imports.matching import Outcome, Owner, OwnerMatcher
from bus.imports.normalize import address_key, corporation
from bus.imports.residents import ExtractRefused, ResidentIndex, resident

TENANT = "412066"
TOWN = "武雄市"
RENKEI = str(Path(sys.executable).with_name("renkei"))
HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,家屋番号,"
    "種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)
EXTRACT = "宛名番号,氏名,氏名カナ,住所,住民種別,住民状態,法人番号"
YAMADA_SHOTEN = "4011001098993"  # 株式会社山田商店 of 武雄市 (a valid 法人番号)
OTHER_NUMBER = "7123456789012"  # valid too: another company


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ResidentIndex]:
    found = ResidentIndex(tmp_path / "residents.sqlite")
    found.put(
        TENANT,
        [
            resident("1", "山田　太郎", "ヤマダ　タロウ", "佐賀県武雄市武雄町大字富岡102番地"),
            resident(
                "2", "株式会社山田商店", "", "佐賀県武雄市武雄町大字武雄1番地", "3", "1",
                YAMADA_SHOTEN,
            ),
            resident("3", "株式会社武雄開発", "", "佐賀県武雄市武雄町大字武雄5番地", "3"),
            resident("4", "有限会社佐賀物産", "", "佐賀県武雄市武雄町大字武雄2番地", "3"),
        ],
    )  # fmt: skip
    yield found
    found.close()


def test_a_company_of_the_same_name_with_another_corporate_number_is_no_match(
    index: ResidentIndex,
) -> None:
    """The notice's 法人番号 names another company: before, the name alone gave 一致."""
    matcher = OwnerMatcher(index, TENANT, TOWN)
    tokyo = Owner(
        "権利者", f"株式会社山田商店（法人番号{OTHER_NUMBER}）", "", "東京都千代田区霞が関1-1-1"
    )
    found = matcher.match(tokyo)
    assert (found.outcome, found.addressee_number, found.candidates) == (
        Outcome.NOT_RESIDENT, "", [],
    )  # fmt: skip
    assert "同名の法人は法人番号が相違" in found.reasons
    # even at the town company's address the numbers say it is another company
    here = Owner("権利者", f"㈱山田商店 {OTHER_NUMBER}", "", "武雄市武雄町武雄1")
    assert matcher.match(here).outcome is Outcome.UNMATCHED
    # its own number still matches, wherever the notice says it is
    own = matcher.match(Owner("権利者", f"㈱山田商店（法人番号{YAMADA_SHOTEN}）", "", "東京都"))
    assert (own.outcome, own.addressee_number) == (Outcome.MATCHED, "2")


def test_a_company_matched_by_name_needs_its_address(index: ResidentIndex) -> None:
    """Many companies share a name: without a 法人番号, 一致 needs the address too."""
    matcher = OwnerMatcher(index, TENANT, TOWN)
    elsewhere = matcher.match(
        Owner("権利者", "株式会社山田商店", "", "福岡県福岡市中央区天神1丁目2番3号")
    )
    assert (elsewhere.outcome, elsewhere.candidates) == (Outcome.UNMATCHED, [("2", 0.7)])
    assert elsewhere.reasons == ["住所相違"]
    no_address = matcher.match(Owner("権利者", "株式会社山田商店"))
    assert no_address.outcome is Outcome.UNMATCHED
    here = matcher.match(Owner("権利者", "㈱山田商店", "", "武雄市武雄町武雄一番地"))
    assert (here.outcome, here.addressee_number) == (Outcome.MATCHED, "2")
    limited = matcher.match(Owner("権利者", "㈲佐賀物産", "", "佐賀県武雄市武雄町大字武雄2番地"))
    assert (limited.outcome, limited.addressee_number) == (Outcome.MATCHED, "4")


@pytest.mark.parametrize(
    "written", ["ｶﾌﾞｼｷｶﾞｲｼｬ武雄開発", "カブシキガイシャ武雄開発", "カブシキカイシャ　武雄開発"]
)
def test_a_corporate_form_written_in_kana_is_the_form(index: ResidentIndex, written: str) -> None:
    found = corporation(written)
    assert found is not None and found.key == "株式会社武雄開発"
    match = OwnerMatcher(index, TENANT, TOWN).match(
        Owner("権利者", written, "", "佐賀県武雄市武雄町大字武雄5番地")
    )
    assert (match.outcome, match.addressee_number) == (Outcome.MATCHED, "3")


def test_an_owner_outside_the_town_sharing_a_residents_name_is_not_resident(
    index: ResidentIndex,
) -> None:
    """Before: 不一致 (住所相違) as soon as anyone in the town had the name."""
    matcher = OwnerMatcher(index, TENANT, TOWN)
    found = matcher.match(Owner("権利者", "山田　太郎", "", "福岡県福岡市中央区天神1丁目2番3号"))
    assert (found.outcome, found.addressee_number) == (Outcome.NOT_RESIDENT, "")
    assert found.candidates == [("1", 0.5)]
    assert found.reasons == ["住所が団体外（住登外）", "候補あり（住所相違）"]
    # inside the town at another address it stays 不一致, the resident a candidate
    inside = matcher.match(Owner("権利者", "山田　太郎", "", "武雄市武雄町大字富岡3番地"))
    assert (inside.outcome, inside.candidates) == (Outcome.UNMATCHED, [("1", 0.5)])


@pytest.mark.parametrize(
    "written",
    [
        "武雄市武雄町大字富岡一零二番地",  # 零
        "武雄市武雄町大字富岡一○二番地",  # a circle typed for 〇
        "武雄市武雄町富岡百二",
    ],
)
def test_zero_written_as_rei_or_a_circle(index: ResidentIndex, written: str) -> None:
    assert address_key(written) == address_key("佐賀県武雄市武雄町大字富岡102番地")
    match = OwnerMatcher(index, TENANT, TOWN).match(Owner("権利者", "山田太郎", "", written))
    assert (match.outcome, match.addressee_number) == (Outcome.MATCHED, "1")


@pytest.mark.parametrize("dash", ["-", "‐", "‑", "‒", "–", "—", "―", "−", "－", "﹣", "ｰ", "ー"])
def test_every_dash_between_numbers_is_a_separator(dash: str) -> None:
    written = f"武雄市北方町1{dash}2{dash}3"
    assert address_key(written) == address_key("武雄市北方町一丁目2番3号") == "武雄市北方町1-2-3"


def test_the_matcher_keeps_sai_and_sai_apart_with_a_matching_address(index: ResidentIndex) -> None:
    index.put(TENANT, [resident("5", "斉藤　一", "", "武雄市北方町一丁目2番3号")])
    matcher = OwnerMatcher(index, TENANT, TOWN)
    found = matcher.match(Owner("権利者", "齋藤　一", "", "武雄市北方町1-2-3"))
    assert found.outcome is Outcome.UNMATCHED and found.addressee_number == ""


# --- the 宛名 extract ---------------------------------------------------------------------


def _extract(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "residents.csv"
    path.write_text("\n".join([EXTRACT, *rows]) + "\n", encoding="utf-8")
    return path


def test_an_extract_row_without_its_addressee_number_is_refused(tmp_path: Path) -> None:
    """Before: loaded, and an owner of that name and address was 一致 with no 宛名番号."""
    extract = _extract(
        tmp_path,
        "1000000001,高橋　一郎,,武雄市武雄町大字富岡1番地,1,1,",
        ",山田　太郎,,武雄市武雄町大字富岡102番地,1,1,",
    )
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        with pytest.raises(ExtractRefused) as refused:
            index.load_extract(extract, TENANT)
        finding = refused.value.finding
        assert finding.code == "RK-IMP016" and "3 行目の宛名番号" in finding.message_ja
        assert "Line 3" in finding.message_en and "山田" not in finding.message_en
        assert index.count(TENANT) == 0  # nothing of it loaded
    finally:
        index.close()


@pytest.mark.parametrize(("column", "value"), [("住民種別", "4"), ("住民状態", "消除")])
def test_an_extract_code_out_of_its_list_is_refused(
    tmp_path: Path, column: str, value: str
) -> None:
    row = {"住民種別": "1", "住民状態": "1", column: value}
    extract = _extract(
        tmp_path, f"1000000001,高橋　一郎,,武雄市,{row['住民種別']},{row['住民状態']},"
    )
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        with pytest.raises(ExtractRefused) as refused:
            index.load_extract(extract, TENANT)
        assert refused.value.finding.code == "RK-IMP016"
        assert f"2 行目の{column}" in refused.value.finding.message_ja
        assert f'"{value}"' in refused.value.finding.message_ja
    finally:
        index.close()


def test_full_width_codes_and_numbers_in_an_extract_are_read(tmp_path: Path) -> None:
    """Before: 住民状態 ４ (death) was not 消除, so the deceased was 一致 at 0.8; a 法人番号
    written ４０１１-… was never found by number."""
    extract = _extract(
        tmp_path,
        "１０００００００２０,佐藤　健,,武雄市武雄町大字富岡2番地,１,４,",
        "1000000021,株式会社佐賀建設,,福岡市,３, １ ,４０１１－００１－０９８９９３",
    )
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        assert index.load_extract(extract, TENANT) == 2
        matcher = OwnerMatcher(index, TENANT, TOWN)
        deceased = matcher.match(Owner("義務者", "佐藤健", "", "武雄市武雄町大字富岡2番地"))
        assert (deceased.outcome, deceased.candidates) == (
            Outcome.UNMATCHED, [("1000000020", 0.7)],
        )  # fmt: skip
        assert deceased.reasons == ["消除済"]
        company = matcher.match(Owner("権利者", f"㈱佐賀建設（法人番号{YAMADA_SHOTEN}）"))
        assert (company.outcome, company.addressee_number, company.reasons) == (
            Outcome.MATCHED, "1000000021", ["法人番号"],
        )  # fmt: skip
    finally:
        index.close()


# --- through `renkei import notices` ----------------------------------------------------


def _notice(number: int, date: str, holders: str, names: str, shares: str = "") -> str:
    lot = f"41000000{number:05d}"
    return (
        f"{date},{number},所有権移転,令和6年3月25日売買,{lot},武雄市武雄町大字富岡,{number}番,"
        f"宅地,100,,,,{holders},{names},,{shares},,"
    )


def _renkei(data: Path, notices: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [RENKEI, "import", "notices", str(notices), "--tenant", TENANT, *options]
    env = {**os.environ, "RENKEI_DATA_DIR": str(data), "COLUMNS": "400"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_adversarial_owners_through_the_import_command(tmp_path: Path) -> None:
    extract = _extract(
        tmp_path,
        "1000000011,山田　太郎,ヤマダ　タロウ,佐賀県武雄市武雄町大字富岡一〇二番地,1,1,",
        f"2000000001,株式会社山田商店,,佐賀県武雄市武雄町大字武雄1番地,3,1,{YAMADA_SHOTEN}",
        "2000000005,株式会社武雄開発,,佐賀県武雄市武雄町大字武雄5番地,3,1,",
    )
    notices = tmp_path / "notices.csv"
    lines = [
        HEADER,
        _notice(1, "令和6年4月3日", "東京都千代田区霞が関1-1-1", f"㈱山田商店 {OTHER_NUMBER}"),
        _notice(2, "R06.04.03", "福岡県福岡市中央区天神1丁目2番3号", "株式会社山田商店"),
        _notice(3, "2024/04/08", "佐賀県武雄市武雄町大字武雄5番地", "ｶﾌﾞｼｷｶﾞｲｼｬ武雄開発"),
        _notice(4, "令和 六年 四月 三日", "福岡県福岡市中央区天神1丁目2番3号", "山田　太郎"),
        _notice(5, "令和２年２月２９日", "武雄市武雄町富岡一○二", "山田　太郎"),
        _notice(
            6, "㍻31年4月26日", "武雄市武雄町大字富岡102番地／武雄市武雄町大字武雄1番地",
            "山田　太郎／株式会社山田商店", "100分の33／100分の67",
        ),
        _notice(7, "令和3年2月29日", "武雄市武雄町大字富岡102番地", "山田　太郎"),
    ]  # fmt: skip
    notices.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    done = _renkei(tmp_path / "data", notices, "--residents", str(extract), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "新規 6 / 重複 0 / エラー 1"
    [listing] = out.glob("notices_*_評価変更リスト.csv")
    with listing.open(encoding="utf-8-sig", newline="") as handle:
        shown = ("受付年月日", "持分", "照合結果", "宛名番号")
        rows = {
            (row["受付番号"], row["権利者"]): tuple(row[column] for column in shown)
            for row in csv.DictReader(handle)
        }
    assert rows == {
        ("1", f"㈱山田商店 {OTHER_NUMBER}"): ("2024-04-03", "", "住登外", ""),
        ("2", "株式会社山田商店"): ("2024-04-03", "", "不一致", ""),
        ("3", "カブシキガイシャ武雄開発"): ("2024-04-08", "", "一致", "2000000005"),
        ("4", "山田 太郎"): ("2024-04-03", "", "住登外", ""),
        ("5", "山田 太郎"): ("2020-02-29", "", "一致", "1000000011"),
        ("6", "山田 太郎"): ("2019-04-26", "33/100", "一致", "1000000011"),
        ("6", "株式会社山田商店"): ("2019-04-26", "67/100", "一致", "2000000001"),
    }
    [errors] = out.glob("notices_*_エラー.csv")
    assert "RK-IMP003" in errors.read_text(encoding="utf-8-sig")  # 令和3年2月29日: line 8


def test_an_extract_without_addressee_numbers_stops_the_import(tmp_path: Path) -> None:
    extract = _extract(tmp_path, ",山田　太郎,,武雄市武雄町大字富岡102番地,1,1,")
    notices = tmp_path / "notices.csv"
    notices.write_text(
        f"{HEADER}\n{_notice(1, '令和6年4月3日', '武雄市武雄町大字富岡102番地', '山田　太郎')}\n",
        encoding="utf-8",
    )
    done = _renkei(tmp_path / "data", notices, "--residents", str(extract), "--out", str(tmp_path))
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "RK-IMP016" in done.stderr and "Traceback" not in done.stderr
    again = _renkei(tmp_path / "data", notices, "--out", str(tmp_path / "out"))
    assert again.stdout.strip().splitlines()[-1] == "新規 1 / 重複 0 / エラー 0"  # nothing stored
