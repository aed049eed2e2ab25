"""Large, realistic 登記済通知 files for tests and benchmarks (``python -m
bus.imports.generator OUT --records N``): the six pilot towns' 大字, names with variant kanji,
corporations before and after their form, co-owners with 持分 in both notations, 和暦 and
西暦 dates, land and buildings. Deterministic for a seed; written as it goes (flat memory).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,"
    "家屋番号,種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)
OAZA = ["富岡", "武雄", "昭和", "永島", "朝日", "甘久", "志久", "大日", "宮野", "川古"]
TOWN = "武雄市武雄町"
SURNAMES = [
    ("高橋", "タカハシ"), ("髙橋", "タカハシ"), ("山崎", "ヤマサキ"), ("山﨑", "ヤマサキ"),
    ("斎藤", "サイトウ"), ("齋藤", "サイトウ"), ("斉藤", "サイトウ"), ("渡辺", "ワタナベ"),
    ("渡邊", "ワタナベ"), ("田中", "タナカ"), ("中島", "ナカシマ"), ("松尾", "マツオ"),
]  # fmt: skip
GIVEN = [
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("一郎", "イチロウ"),
    ("恵美", "エミ"),
    ("浩二", "コウジ"),
]
COMPANIES = ["㈱佐賀不動産", "佐賀建設(株)", "株式会社武雄開発", "有限会社嬉野商事"]
PURPOSES = ["所有権移転", "所有権保存", "所有権移転", "地目変更", "表題"]
CAUSES = ["売買", "相続", "贈与", "新築", "錯誤"]
CATEGORIES = ["宅地", "田", "畑", "山林", "雑種地"]


def _date(rng: random.Random) -> str:
    year, month, day = rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28)
    form = rng.randrange(3)
    if form == 0 and year >= 2020:
        return f"令和{year - 2018}年{month}月{day}日"
    if form == 1 and year >= 2020:
        return f"R{year - 2018:02d}.{month:02d}.{day:02d}"
    return f"{year}/{month:02d}/{day:02d}"


def _person(rng: random.Random) -> tuple[str, str]:
    (surname, surname_kana), (given, given_kana) = rng.choice(SURNAMES), rng.choice(GIVEN)
    return f"{surname}　{given}", f"{surname_kana}　{given_kana}"


def line(rng: random.Random, number: int) -> str:
    oaza = rng.choice(OAZA)
    lot = f"{rng.randint(1, 3000)}番{rng.randint(1, 20)}"
    address = f"佐賀県{TOWN}大字{oaza}{rng.randint(1, 3000)}番地"
    building = rng.random() < 0.3
    owners = 2 if rng.random() < 0.2 else 1
    if rng.random() < 0.1:
        names, kanas, shares = [rng.choice(COMPANIES)], [""], [""]
    else:
        people = [_person(rng) for _ in range(owners)]
        names, kanas = [p[0] for p in people], [p[1] for p in people]
        shares = ["２分の１", "1/2"] if owners == 2 else [""]
    obligor = _person(rng)[0] if rng.random() < 0.6 else ""
    fields = [
        _date(rng),
        str(number),
        rng.choice(PURPOSES),
        f"{_date(rng)}{rng.choice(CAUSES)}",
        f"{4100000000000 + number:013d}",
        f"{TOWN}大字{oaza}",
        lot,
        "" if building else rng.choice(CATEGORIES),
        "" if building else f"{rng.randint(30, 5000)}.{rng.randint(0, 99):02d}",
        lot if building else "",
        "居宅" if building else "",
        f"{rng.randint(40, 300)}.{rng.randint(0, 99):02d}" if building else "",
        "／".join([address] * len(names)),
        "／".join(names),
        "／".join(kanas) if any(kanas) else "",
        "／".join(shares) if any(shares) else "",
        address if obligor else "",
        obligor,
    ]
    return ",".join(fields)


def generate(path: Path, records: int, *, seed: int = 6, encoding: str = "cp932") -> None:
    rng = random.Random(seed)
    with path.open("w", encoding=encoding, newline="") as handle:
        handle.write(HEADER + "\r\n")
        for number in range(1, records + 1):
            handle.write(line(rng, number) + "\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--encoding", default="cp932", choices=["cp932", "utf-8", "utf-8-sig"])
    args = parser.parse_args()
    generate(args.out, args.records, seed=args.seed, encoding=args.encoding)


if __name__ == "__main__":
    main()
