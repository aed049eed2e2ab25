"""The work file lists its rows in list order, a notice listed twice only from its first line:
the query without indexes gives what its definition (one row per first line of a key) gives."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bus.imports.worklist import ListRow, Worklist

DEFINITION = (
    "select cells from rows r"
    " where r.line = (select min(k.line) from rows k where k.key = r.key)"
    " order by oaza, lot, receipt, line, seq"
)


def _chunk(rng: random.Random, first_line: int, count: int) -> list[ListRow]:
    rows = []
    for line in range(first_line, first_line + count):
        key = f"k{rng.randrange(count * 3)}"  # keys recur across lines and chunks
        sort_key = (rng.choice(["富岡", "武雄", ""]), f"{rng.randrange(5):09d}", f"{line % 4}")
        for seq in range(rng.randint(1, 3)):
            rows.append(ListRow(line, seq, sort_key, key, [str(line), str(seq), key]))
    return rows


@pytest.mark.parametrize("seed", range(3))
def test_the_rows_come_in_list_order_once_per_notice(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    work = Worklist(tmp_path / "work.sqlite", "f" * 64, "412066", "cp932")
    try:
        for number in range(8):
            work.commit(_chunk(rng, 1 + number * 300, 300), [], number, number)
        listed = list(work.sorted_rows())
        expected = [json.loads(c) for (c,) in work._db.execute(DEFINITION)]
        assert listed == expected
        total = work._db.execute("select count(*) from rows").fetchone()[0]
        assert 0 < len(listed) < total  # some notices were listed twice
    finally:
        work.close()
