"""Owner matching (名寄せ): normalisation and outcomes against a known resident set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.imports.matching import Outcome, Owner, OwnerMatcher
from bus.imports.normalize import address_key, corporation, name_key, variant_table
from bus.imports.residents import ResidentIndex, resident
from bus.mapping.text import share

TENANT = "412066"
TOWN = "武雄市"


def test_variant_kanji_fold_but_sai_and_sai_stay_apart() -> None:
    assert name_key("齋藤　髙志") == name_key("斎藤 高志")
    assert name_key("齊藤") == name_key("斉藤")
    assert name_key("斎藤") != name_key("斉藤")
    assert name_key("山﨑") == name_key("山崎") and name_key("渡邉") == name_key("渡辺")
    table = variant_table()
    assert table[ord("齋")] == "斎" and table[ord("齊")] == "斉"


@pytest.mark.parametrize(
    "written",
    [
        "佐賀県杵島郡大町町大字大町一七二二番地十",
        "大町町大町１７２２－１０",
        "杵島郡大町町字大町1722番地10",
    ],
)
def test_addresses_in_any_notation_compare_equal(written: str) -> None:
    assert address_key(written) == "大町町大町1722-10"


def test_chome_ban_go_and_wave_dash() -> None:
    assert address_key("武雄市北方町一丁目2番3号") == address_key("武雄市北方町1-2-3")
    assert address_key("武雄町4567番地2 ハイツ～A") == address_key("武雄町4567番地2　ハイツ〜A")


def test_corporations_and_shares() -> None:
    before, after = corporation("㈱佐賀不動産"), corporation("佐賀不動産（株）")
    assert before is not None and after is not None
    assert before.key == "株式会社佐賀不動産" and after.key == "佐賀不動産株式会社"
    assert before.bare == after.bare
    numbered = corporation("株式会社佐賀不動産 法人番号4011001098993")
    assert numbered is not None and numbered.number == "4011001098993"
    assert corporation("山田　太郎") is None
    assert [share(s) for s in ("２分の１", "1/2", "持分３分の２", "１／３", "3/2", "半分")] == [
        "1/2", "1/2", "2/3", "1/3", None, None,
    ]  # fmt: skip


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ResidentIndex]:
    found = ResidentIndex(tmp_path / "residents.sqlite")
    found.put(
        TENANT,
        [
            resident("1", "高橋　一郎", "タカハシ　イチロウ", "佐賀県武雄市武雄町大字富岡1234番地"),
            resident("2", "斎藤　太郎", "サイトウ　タロウ", "武雄市北方町大字志久12番地3"),
            resident("3", "斉藤　太郎", "サイトウ　タロウ", "武雄市朝日町大字甘久5番地"),
            resident("4", "斎藤　花子", "サイトウ　ハナコ", "武雄市橘町大字大日1番地"),
            resident("5", "斎藤　花子", "サイトウ　ハナコ", "武雄市山内町大字宮野2番地"),
            resident(
                "6", "株式会社佐賀不動産", "", "佐賀市城内1丁目1番1号", "3", "1", "4011001098993"
            ),
        ],
    )
    yield found
    found.close()


def test_matching_outcomes(index: ResidentIndex) -> None:
    matcher = OwnerMatcher(index, TENANT, TOWN)
    one = matcher.match(Owner("権利者", "髙橋 一郎", "", "佐賀県武雄市武雄町大字富岡１２３４番地"))
    assert (one.outcome, one.addressee_number) == (Outcome.MATCHED, "1")
    # 齋藤 is 斎藤 (resident 2), never 斉藤 (resident 3): 3 scores by kana only
    sai = matcher.match(Owner("権利者", "齋藤　太郎", "サイトウ　タロウ", "武雄市北方町志久12-3"))
    assert (sai.outcome, sai.addressee_number) == (Outcome.MATCHED, "2")
    assert dict(sai.candidates) == {"2": 1.0, "3": 0.2}
    several = matcher.match(Owner("権利者", "斎藤　花子", "サイトウ　ハナコ", "武雄市武雄町1番地"))
    assert several.outcome is Outcome.CANDIDATES
    assert dict(several.candidates) == {"4": 0.7, "5": 0.7}
    nobody = matcher.match(Owner("権利者", "山田　太郎", "", "武雄市武雄町1番地"))
    assert (nobody.outcome, nobody.reasons) == (Outcome.UNMATCHED, ["該当なし"])
    outside = matcher.match(Owner("権利者", "山田　太郎", "", "福岡県福岡市中央区天神1丁目"))
    assert outside.outcome is Outcome.NOT_RESIDENT
    by_number = matcher.match(Owner("権利者", "㈱佐賀不動産（法人番号4011001098993）"))
    assert (by_number.outcome, by_number.addressee_number) == (Outcome.MATCHED, "6")
    other_side = matcher.match(Owner("義務者", "佐賀不動産株式会社", "", "佐賀市城内1-1-1"))
    assert other_side.outcome is Outcome.UNMATCHED and other_side.candidates == [("6", 0.6)]


def test_no_resident_data_is_unchecked(tmp_path: Path) -> None:
    empty = ResidentIndex(tmp_path / "empty.sqlite")
    try:
        result = OwnerMatcher(empty, TENANT, TOWN).match(Owner("権利者", "高橋　一郎"))
        assert result.outcome is Outcome.UNCHECKED
        assert OwnerMatcher(None, TENANT, TOWN).match(Owner("権利者", "x")).outcome == "未照合"
    finally:
        empty.close()
