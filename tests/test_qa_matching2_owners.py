"""QA of owner matching (名寄せ), second round: co-owners' 持分 that do not add up, 霞ケ関 /
霞ヶ関 / 霞が関, old-style large kana, 社会福祉法人 and the other corporate forms, addresses
written without their town, and a prefecture pattern that took 大字国府 for one. A false 一致
sends a tax notice to the wrong person: every widening here has a test that two different
people or bodies still do not match."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.imports.layout import load_section
from bus.imports.lines import RawLine
from bus.imports.matching import Outcome, Owner, OwnerMatcher
from bus.imports.normalize import address_key, corporation, kana_key, name_key, oaza_key
from bus.imports.records import Notice, NoticeParser
from bus.imports.residents import Resident, ResidentIndex, resident

TAKEO, OMACHI = "412066", "414239"
RENKEI = str(Path(sys.executable).with_name("renkei"))
HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,家屋番号,"
    "種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)
EXTRACT = "宛名番号,氏名,氏名カナ,住所,住民種別,住民状態,法人番号"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ResidentIndex]:
    found = ResidentIndex(tmp_path / "residents.sqlite")
    found.put(
        TAKEO,
        [
            resident("1", "山田　太郎", "ヤマダ　タロウ", "佐賀県武雄市武雄町大字富岡102番地"),
            resident("2", "佐藤　花子", "サトウ　ハナコ", "佐賀県武雄市武雄町大字霞ヶ関5番地"),
            resident("3", "山田　京子", "ヤマダ　キョウコ", "武雄市武雄町大字永島8番地", "1", "4"),
            resident("4", "社会福祉法人武雄会", "", "武雄市武雄町大字武雄1番地", "3"),
            resident("5", "社団法人佐賀協会", "", "武雄市武雄町大字武雄2番地", "3"),
            resident("6", "特定非営利活動法人たけお", "", "武雄市武雄町大字武雄3番地", "3"),
            resident("7", "千ヶ崎　一", "", "武雄市武雄町大字富岡7番地"),
        ],
    )
    found.put(OMACHI, [resident("11", "大町　一郎", "", "佐賀県杵島郡大町町大字大町1722番地10")])
    yield found
    found.close()


# --- 1. 持分 that do not add up to 1 --------------------------------------------------------


def _parse(line: str) -> Notice:
    parser = NoticeParser(load_section(None), "utf-8", TAKEO, "武雄市")
    data = line.encode()
    notice = parser.parse(RawLine(1, 0, data, len(data)))
    assert isinstance(notice, Notice), notice
    return notice


def _line(purpose: str, names: str, shares: str) -> str:
    count = names.count("／") + 1
    addresses = "／".join(["武雄市武雄町大字富岡102番地"] * count)
    return (
        f"令和6年4月3日,1,{purpose},令和6年3月25日売買,4100000000011,武雄市武雄町大字富岡,"
        f"102番,宅地,100,,,,{addresses},{names},,{shares},,"
    )


@pytest.mark.parametrize(
    ("shares", "total"),
    [
        ("100分の33／100分の33", "33/50"),  # 2/3 written in hundredths
        ("２分の１／1/3", "5/6"),  # both notations
        ("２分の１／２分の１／３分の１", "4/3"),  # more than the whole
    ],
)
def test_shares_that_do_not_add_up_are_flagged(shares: str, total: str) -> None:
    names = "／".join(["山田　太郎", "山田　花子", "山田　次郎"][: shares.count("／") + 1])
    notice = _parse(_line("所有権移転", names, shares))
    assert f"持分の合計が1になりません: 合計 {total}" in notice.review


@pytest.mark.parametrize(
    ("purpose", "names", "shares"),
    [
        ("所有権移転", "山田　太郎／山田　花子", "２分の１／1/2"),
        ("所有権移転", "山田　太郎／山田　花子／山田　次郎", "3分の1／3分の1／3分の1"),  # exact
        ("所有権移転", "山田　太郎", ""),  # a single owner without a share
        ("所有権移転", "山田　太郎／山田　花子", "２分の１／"),  # a share missing: not all read
        ("所有権移転", "山田　太郎／山田　花子", "２分の１／半分"),  # unreadable: imported empty
        ("所有権一部移転", "山田　太郎", "3分の1"),  # a part: the share acquired
        ("山田一郎持分全部移転", "山田　太郎", "２分の１"),  # one co-owner's share
    ],
)
def test_shares_that_add_up_or_cannot_be_summed_are_not_flagged(
    purpose: str, names: str, shares: str
) -> None:
    notice = _parse(_line(purpose, names, shares))
    assert not [r for r in notice.review if r.startswith("持分の合計")], notice.review


def test_a_whole_transfer_by_all_co_owners_is_checked() -> None:
    notice = _parse(_line("共有者全員持分全部移転", "山田　太郎／山田　花子", "3分の1／3分の1"))
    assert "持分の合計が1になりません: 合計 2/3" in notice.review


# --- 2. ケ / ヶ / が in addresses only ---------------------------------------------------


@pytest.mark.parametrize("written", ["武雄市武雄町霞ケ関5", "武雄市武雄町大字霞が関五番地"])
def test_ke_and_ga_in_a_place_name_are_one(index: ResidentIndex, written: str) -> None:
    """Before: 霞が関 and 霞ケ関 were other addresses than 霞ヶ関: 不一致 (住所相違)."""
    match = OwnerMatcher(index, TAKEO, "武雄市").match(Owner("権利者", "佐藤花子", "", written))
    assert (match.outcome, match.addressee_number) == (Outcome.MATCHED, "2")
    # and the list groups the 所在 as one 大字
    town = address_key("武雄市")
    assert oaza_key("武雄市武雄町大字霞が関", town) == oaza_key("武雄町霞ヶ関字下町", town)


def test_the_fold_does_not_join_other_places_or_names(index: ResidentIndex) -> None:
    assert address_key("武雄市武雄町霞関5") != address_key("武雄市武雄町霞ヶ関5")
    assert address_key("武雄市武雄町霞ヶ関5") != address_key("武雄市武雄町霞ヶ丘5")
    matcher = OwnerMatcher(index, TAKEO, "武雄市")
    other_place = matcher.match(Owner("権利者", "佐藤花子", "", "武雄市武雄町大字霞関5番地"))
    assert other_place.outcome is Outcome.UNMATCHED
    # in a person's name ヶ and が stay as written: 千が崎 is not the resident 千ヶ崎
    assert name_key("千が崎　一") != name_key("千ヶ崎　一")
    name = matcher.match(Owner("権利者", "千が崎　一", "", "武雄市武雄町大字富岡7番地"))
    assert name.outcome is Outcome.UNMATCHED and name.addressee_number == ""


def test_keys_an_older_index_stored_are_folded_when_compared(tmp_path: Path) -> None:
    """An index built before the folds holds 霞ヶ関 and キョウコ as written: after the
    upgrade its residents still match (before the compare-time fold: 住所相違)."""
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        old = Resident(
            "9", "山田京子", "ヤマダキョウコ", "武雄市武雄町霞ヶ関9", "1", "1", "", "", ""
        )
        index.put(TAKEO, [old])
        match = OwnerMatcher(index, TAKEO, "武雄市").match(
            Owner("権利者", "山田　京子", "ヤマダ　キョウコ", "武雄市武雄町大字霞が関9番地")
        )
        assert (match.outcome, match.addressee_number, match.candidates) == (
            Outcome.MATCHED, "9", [("9", 1.0)],
        )  # fmt: skip
    finally:
        index.close()


# --- 3. old-style large kana -------------------------------------------------------------


def test_old_style_large_kana_is_the_same_reading(index: ResidentIndex) -> None:
    """A deceased (消除) resident needs name, address *and* kana for 一致 (0.9); キヨウコ was
    another reading than キョウコ, so she was 不一致 (0.7)."""
    assert kana_key("ヤマダ　キヨウコ") == kana_key("やまだ きょうこ") == kana_key("ﾔﾏﾀﾞ ｷｮｳｺ")
    matcher = OwnerMatcher(index, TAKEO, "武雄市")
    found = matcher.match(
        Owner("義務者", "山田　京子", "ヤマダ　キヨウコ", "武雄市武雄町大字永島8番地")
    )
    assert (found.outcome, found.addressee_number, found.candidates) == (
        Outcome.MATCHED, "3", [("3", 0.9)],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kana"),
    [("山田　恭子", "ヤマダ　キヨウコ"), ("山田　今日子", "ヤマダ　キョウコ")],
)
def test_the_same_reading_under_another_kanji_name_is_no_match(
    index: ResidentIndex, name: str, kana: str
) -> None:
    """Kana alone, even at the same address, is 0.5: 一致 needs the kanji name."""
    found = OwnerMatcher(index, TAKEO, "武雄市").match(
        Owner("権利者", name, kana, "武雄市武雄町大字永島8番地")
    )
    assert (found.outcome, found.addressee_number) == (Outcome.UNMATCHED, "")
    assert found.candidates == [("3", 0.4)]  # address 0.3 + kana 0.2 − 消除 0.1
    assert "氏名相違（カナのみ一致）" in found.reasons


# --- 4. 社会福祉法人, 医療法人, 社団/財団法人, NPO法人 --------------------------------------


@pytest.mark.parametrize(
    ("written", "address", "number"),
    [
        ("(福)武雄会", "武雄市武雄町大字武雄1番地", "4"),
        ("（社福）武雄会", "武雄市武雄町大字武雄1番地", "4"),
        ("㈳佐賀協会", "武雄市武雄町大字武雄2番地", "5"),
        ("ＮＰＯ法人たけお", "武雄市武雄町大字武雄3番地", "6"),
        ("特定非営利活動法人　たけお", "武雄市武雄町大字武雄3番地", "6"),
    ],
)
def test_other_corporate_forms_are_read_as_forms(
    index: ResidentIndex, written: str, address: str, number: str
) -> None:
    """Before: a person's name, (福)武雄会 ≠ 社会福祉法人武雄会: 該当なし."""
    match = OwnerMatcher(index, TAKEO, "武雄市").match(Owner("権利者", written, "", address))
    assert (match.outcome, match.addressee_number, match.reasons) == (
        Outcome.MATCHED, number, ["法人名"],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("written", "address"),
    [
        ("医療法人武雄会", "武雄市武雄町大字武雄1番地"),  # another body at the same address
        ("(医)武雄会", "武雄市武雄町大字武雄1番地"),
        ("公益社団法人佐賀協会", "武雄市武雄町大字武雄2番地"),
        ("㈶佐賀協会", "武雄市武雄町大字武雄2番地"),
        ("一般社団法人佐賀協会", "武雄市武雄町大字武雄2番地"),
    ],
)
def test_another_kind_of_body_of_the_same_name_is_no_match(
    index: ResidentIndex, written: str, address: str
) -> None:
    """A candidate at most (a form may have changed: 社団法人 → 一般社団法人), never 一致,
    and the reason says the kind differs, not the position (前株・後株)."""
    found = OwnerMatcher(index, TAKEO, "武雄市").match(Owner("権利者", written, "", address))
    assert (found.outcome, found.addressee_number) == (Outcome.UNMATCHED, "")
    assert [s for _, s in found.candidates] == [0.6]
    assert found.reasons == ["法人の種類が相違"]


def test_the_forms_keep_their_names() -> None:
    medical = corporation("医療法人社団武雄会")
    welfare = corporation("(福)武雄会")
    assert medical is not None and welfare is not None
    assert (medical.key, welfare.key) == ("医療法人社団武雄会", "社会福祉法人武雄会")
    public = corporation("公益財団法人佐賀育英会")
    assert public is not None and (public.form, public.bare) == ("公益財団法人", "佐賀育英会")


# --- 5. an address written without its town ----------------------------------------------


def test_an_address_without_its_town_is_read_inside_the_tenants_town(
    index: ResidentIndex,
) -> None:
    """Before: 大字大町1722番地10 was outside 大町町, the resident no candidate: 住登外."""
    omachi = OwnerMatcher(index, OMACHI, "大町町")
    for written in ("大字大町1722番地10", "大字大町一七二二番地十", "字大町1722-10"):
        found = omachi.match(Owner("権利者", "大町　一郎", "", written))
        assert (found.outcome, found.addressee_number) == (Outcome.MATCHED, "11"), written
    nobody = omachi.match(Owner("権利者", "大町　次郎", "", "大字大町5番地"))
    assert (nobody.outcome, nobody.reasons) == (Outcome.UNMATCHED, ["該当なし"])
    # a 町名 inside a city: 武雄町大字富岡 in 武雄市
    takeo = OwnerMatcher(index, TAKEO, "武雄市")
    found = takeo.match(Owner("権利者", "山田太郎", "", "武雄町大字富岡102番地"))
    assert (found.outcome, found.addressee_number) == (Outcome.MATCHED, "1")


@pytest.mark.parametrize(
    "written",
    [
        "杵島郡江北町大字大町1722番地10",  # another town with a 大字 of that name
        "佐賀県嬉野市嬉野町大字大町1722番地10",
        "江北町大字大町1722番地10",  # a town, written without its 郡
    ],
)
def test_an_address_in_another_town_sharing_the_oaza_is_not_matched(
    index: ResidentIndex, written: str
) -> None:
    found = OwnerMatcher(index, OMACHI, "大町町").match(Owner("権利者", "大町　一郎", "", written))
    assert found.outcome is not Outcome.MATCHED and found.addressee_number == ""
    assert found.candidates == [("11", 0.5)]


@pytest.mark.parametrize(
    ("location", "outside"),
    [("大字大町", False), ("杵島郡大町町大字大町", False), ("杵島郡江北町大字大町", True)],
)
def test_a_location_without_its_town_is_not_flagged_outside(location: str, outside: bool) -> None:
    """Before: 所在 大字大町 in a file for 大町町 was flagged 所在が団体外."""
    parser = NoticeParser(load_section(None), "utf-8", OMACHI, "大町町")
    data = _line("所有権移転", "大町　一郎", "").replace("武雄市武雄町大字富岡,", f"{location},")
    notice = parser.parse(RawLine(1, 0, data.encode(), len(data.encode())))
    assert isinstance(notice, Notice)
    assert ("所在が団体外" in notice.review) is outside


def test_only_the_town_is_supplied_never_a_machi(index: ResidentIndex) -> None:
    """武雄市's addresses name a 町 before the 大字: 大字富岡102 is read 武雄市富岡102, not
    guessed into one of its 町 (two 町 may have a 富岡)."""
    found = OwnerMatcher(index, TAKEO, "武雄市").match(
        Owner("権利者", "山田太郎", "", "大字富岡102番地")
    )
    assert found.outcome is Outcome.UNMATCHED and found.reasons == ["住所相違"]


@pytest.mark.parametrize(
    ("one", "other"),
    [("大字国府12番地", "大字中道12番地"), ("大字下郡5", "大字上郡5"), ("大字京都1", "大字東都1")],
)
def test_an_oaza_ending_like_a_prefecture_or_gun_is_kept(
    tmp_path: Path, one: str, other: str
) -> None:
    """Before: '.{2,3}県/都/道/府' and '…郡' were stripped as a prefecture or 郡, so 大字国府12
    and 大字中道12 both became 12: the same name at the other 大字 was 一致."""
    assert address_key(one) != address_key(other)
    index = ResidentIndex(tmp_path / "residents.sqlite")
    try:
        index.put(TAKEO, [resident("1", "山田　太郎", "", other)])
        found = OwnerMatcher(index, TAKEO, "武雄市").match(Owner("権利者", "山田太郎", "", one))
        assert found.outcome is not Outcome.MATCHED
    finally:
        index.close()


# --- through `renkei import notices` -------------------------------------------------------


def _notice(number: int, location: str, holders: str, names: str, shares: str = "") -> str:
    return (
        f"令和6年4月3日,{number},所有権移転,令和6年3月25日売買,41000000{number:05d},{location},"
        f"{number}番,宅地,100,,,,{holders},{names},,{shares},,"
    )


def _import(tmp_path: Path, tenant: str, extract: list[str], lines: list[str]) -> dict[str, str]:
    residents = tmp_path / f"residents-{tenant}.csv"
    residents.write_text("\n".join([EXTRACT, *extract]) + "\n", encoding="utf-8")
    notices = tmp_path / f"notices-{tenant}.csv"
    notices.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    command = [RENKEI, "import", "notices", str(notices), "--tenant", tenant]
    command += ["--residents", str(residents), "--out", str(out)]
    env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [listing] = out.glob(f"notices-{tenant}_*_評価変更リスト.csv")
    with listing.open(encoding="utf-8-sig", newline="") as handle:
        return {
            f"{row['受付番号']} {row['権利者']}": f"{row['照合結果']} {row['宛名番号']} "
            f"{row['要確認理由']}".strip()
            for row in csv.DictReader(handle)
        }


def test_the_second_round_through_the_import_command(tmp_path: Path) -> None:
    rows = _import(
        tmp_path,
        TAKEO,
        [
            "1000000011,山田　太郎,ヤマダ　タロウ,佐賀県武雄市武雄町大字富岡102番地,1,1,",
            "1000000012,佐藤　花子,,佐賀県武雄市武雄町大字霞ヶ関5番地,1,1,",
            "2000000001,社会福祉法人武雄会,,武雄市武雄町大字武雄1番地,3,1,",
        ],
        [
            _notice(
                1, "武雄市武雄町大字富岡", "武雄町大字富岡102番地／武雄町大字富岡102番地",
                "山田　太郎／山田　花子", "100分の33／100分の33",
            ),
            _notice(2, "武雄市武雄町大字霞が関", "武雄市武雄町霞が関5", "佐藤　花子"),
            _notice(3, "武雄市武雄町大字武雄", "武雄市武雄町大字武雄1番地", "（福）武雄会"),
            _notice(4, "武雄市武雄町大字武雄", "武雄市武雄町大字武雄1番地", "医療法人武雄会"),
        ],
    )  # fmt: skip
    flagged = "持分の合計が1になりません: 合計 33/50"
    assert rows == {
        "1 山田 太郎": f"一致 1000000011 {flagged}",
        "1 山田 花子": f"不一致  {flagged}、該当なし",
        "2 佐藤 花子": "一致 1000000012",
        "3 (福)武雄会": "一致 2000000001 法人名",
        "4 医療法人武雄会": "不一致  法人の種類が相違",
    }


def test_an_address_without_its_town_through_the_import_command(tmp_path: Path) -> None:
    rows = _import(
        tmp_path,
        OMACHI,
        ["1000000021,大町　一郎,,佐賀県杵島郡大町町大字大町1722番地10,1,1,"],
        [
            _notice(1, "大町町大字大町", "大字大町1722番地10", "大町　一郎"),
            _notice(2, "大町町大字大町", "杵島郡江北町大字大町1722番地10", "大町　一郎"),
        ],
    )
    assert rows == {
        "1 大町 一郎": "一致 1000000021",
        "2 大町 一郎": "住登外  住所が団体外（住登外）、候補あり（住所相違）",
    }
