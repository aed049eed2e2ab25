"""Owner matching with its remembered keys and look-ups gives what matching without them gives;
the half-width kana scan and the list's remembered 大字 and names are their definitions."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.imports import listing, normalize
from bus.imports.generator import COMPANIES, GIVEN, OAZA, SURNAMES, TOWN
from bus.imports.matching import Owner, OwnerMatcher
from bus.imports.normalize import fold_text
from bus.imports.residents import ResidentIndex, resident
from bus.mapping.text import to_half_width, to_katakana

TENANT = "412066"
ADDRESSES = [
    *(f"佐賀県{TOWN}大字{oaza}{n}番地" for oaza in OAZA[:4] for n in (1, 12, 1234)),
    "武雄市北方町大字志久１２番地３", "武雄市北方町志久12-3", "福岡県福岡市中央区天神1丁目",
    "", "　", "武雄町4567番地2 ハイツ～A", "武雄町4567番地2　ハイツ〜A", "佐賀市城内1丁目1番1号",
]  # fmt: skip
NAMES = [
    *(f"{s}{sep}{g}" for s, _ in SURNAMES for g, _ in GIVEN[:3] for sep in ("　", " ", "")),
    *COMPANIES, "株式会社佐賀不動産", "佐賀不動産株式会社", "㈱佐賀不動産（法人番号4011001098993）",
    "株式会社武雄開発 法人番号4011001098993", "ｻｲﾄｳ ﾀﾛｳ", "山田　太郎",
]  # fmt: skip
OUTSIDERS = ["佐藤　健", "鈴木　一"]  # no resident has these names
KANAS = ["", *(f"{sk}　{gk}" for _, sk in SURNAMES[:6] for _, gk in GIVEN[:3]), "ｻｲﾄｳ ﾀﾛｳ"]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ResidentIndex]:
    rng = random.Random(3)
    found = ResidentIndex(tmp_path / "residents.sqlite")
    people = [
        resident(
            str(n),
            rng.choice(NAMES),
            rng.choice(KANAS),
            rng.choice(ADDRESSES),
            rng.choice("123"),
            rng.choice("13345"),
            rng.choice(["", "", "4011001098993"]),
        )
        for n in range(1, 120)
    ]
    found.put(TENANT, people)
    yield found
    found.close()


def owners(seed: int, count: int) -> list[Owner]:
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        name = rng.choice([*NAMES, *OUTSIDERS])
        kana = "" if name in OUTSIDERS else rng.choice(KANAS)
        role = rng.choice(["権利者", "義務者"])
        found.append(Owner(role, name, kana, rng.choice(ADDRESSES), rng.choice(["", "1/2"])))
    return found


@pytest.mark.parametrize("seed", range(3))
def test_remembered_matching_is_matching(index: ResidentIndex, seed: int) -> None:
    remembering = OwnerMatcher(index, TENANT, "武雄市", cache=64)  # small: entries are evicted
    computing = OwnerMatcher(index, TENANT, "武雄市", cache=0)
    each = owners(seed, 1_500)
    outcomes = set()
    for owner in each + each[::-1]:
        expected = computing.match(owner)
        assert remembering.match(owner) == expected, owner
        outcomes.add(expected.outcome.value)
    assert outcomes == {"一致", "候補複数", "不一致", "住登外"}


def test_the_half_width_kana_scan_is_its_definition() -> None:
    rng = random.Random(5)
    alphabet = "ｱｶﾞﾊﾟｰ･｡ﾟﾞ\uff60\uffa0アかa 　髙"
    for _ in range(3_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        if not any("\uff61" <= ch <= "\uff9f" for ch in text):
            expected = text
        else:
            expected = re.sub(r"[\uff61-\uff9f]+", lambda m: to_katakana(m.group()), text)
        assert normalize._widen_kana(text) == expected, text


def test_the_one_pass_fold_is_its_three_steps() -> None:
    """Signs, then width, then the variant table, each over the whole text, as they were
    written: every character the steps change, and random text of them with others."""
    signs, variants = normalize._SIGNS, normalize.variant_table()

    def stepwise(text: str) -> str:
        return to_half_width(normalize._widen_kana(text).translate(signs)).translate(variants)

    changed = [chr(c) for c in range(0x10000) if stepwise(chr(c)) != chr(c)]
    changed += [chr(c) for c in variants]
    assert {"〜", "－", "Ａ", "１", "\u3000", "髙", "﨑", "ｱ"} <= set(changed)
    for ch in changed:
        assert fold_text(ch) == stepwise(ch), ch
    rng = random.Random(7)
    alphabet = [*changed, *"斎斉高崎アあa1-~ 字番地"]
    for _ in range(3_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert fold_text(text) == stepwise(text), text


def test_the_remembered_oaza_and_names_are_computed_ones() -> None:
    town_key = normalize.address_key("武雄市")
    places = [f"{TOWN}大字{o}" for o in OAZA] + ["武雄市朝日町甘久", "ﾀｹｵｼ字永島", "", "大字"]
    for place in places * 2:
        assert listing._oaza(place, town_key) == normalize.oaza_key(place, town_key)
    for name in NAMES * 2:
        assert listing._shown_name(name) == " ".join(fold_text(name).split())
