"""The work file lists its rows in list order, a notice listed twice only from its first line:
the query without indexes gives what its definition (one row per first line of a key) gives.
A row's cells are stored joined when they are all text, as JSON otherwise: either way they
come back as JSON would give them, and a work file of cells stored as JSON only (an import
begun by an earlier version) is read as well."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from bus.hub import Hub
from bus.imports.chunk_work import ChunkWork
from bus.imports.generator import generate
from bus.imports.layout import load_section
from bus.imports.lines import split_lines
from bus.imports.listing import rows_for
from bus.imports.matching import OwnerMatcher
from bus.imports.records import Notice, NoticeParser
from bus.imports.residents import ResidentIndex
from bus.imports.worklist import ListRow, Worklist, decode_cells, encode_cells
from bus.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESIDENTS = ROOT / "samples" / "notices" / "residents-412066.csv"
TENANT = "412066"

DEFINITION = (
    "select cells from rows r"
    " where r.line = (select min(k.line) from rows k where k.key = r.key)"
    " order by oaza, lot, receipt, line, seq"
)
CELLS: list[Any] = [
    "", "武雄市武雄町大字川古", "渡辺　太郎", " lead", "trail ", "a\x1fb", "\x1f", "[1]",
    '"quoted"', "\\", "\x1e", "1/2", "〓", "𠮟", None, 0, 12, 1.5, True,
]  # fmt: skip


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
            rows = [row.stored() for row in _chunk(rng, 1 + number * 300, 300)]
            work.commit(rows, [], number, number)
        listed = list(work.sorted_rows())
        expected = [decode_cells(c) for (c,) in work._db.execute(DEFINITION)]
        assert listed == expected
        total = work._db.execute("select count(*) from rows").fetchone()[0]
        assert 0 < len(listed) < total  # some notices were listed twice
    finally:
        work.close()


@pytest.mark.parametrize("seed", range(4))
def test_cells_come_back_as_json_gives_them(seed: int) -> None:
    rng = random.Random(seed)
    rows = [[rng.choice(CELLS) for _ in range(rng.randint(0, 18))] for _ in range(3_000)]
    rows += [[], [""], ["\x1f"], ["a", "\x1f"], ["[]"], [None], CELLS]
    for cells in rows:
        stored = encode_cells(cells)
        assert decode_cells(stored) == json.loads(json.dumps(cells)), cells
    text = [r for r in rows if r and all(type(c) is str and "\x1f" not in c for c in r)]
    assert all(not encode_cells(r).startswith("[") for r in text)  # joined, not JSON


def test_a_work_file_of_json_cells_is_read(tmp_path: Path) -> None:
    """An import begun before cells were stored joined, resumed: its rows are listed too."""
    work = Worklist(tmp_path / "work.sqlite", "f" * 64, "412066", "cp932")
    try:
        old = [["2024-04-03", "12", "武雄"], ["2024-04-03", "13", None]]
        with work._db:
            work._db.executemany(
                "insert into rows values (?, ?, 'a', '1', ?, ?, ?)",
                [
                    (n, 0, str(n), f"k{n}", json.dumps(c, ensure_ascii=False))
                    for n, c in enumerate(old)
                ],
            )
        new = ListRow(5, 0, ("b", "1", "5"), "k5", ["2024-04-05", "5", "川古"])
        work.commit([new.stored()], [], 10, 6)
        assert list(work.sorted_rows()) == [*old, new.cells]
    finally:
        work.close()


def test_a_chunk_result_crosses_the_pipe_as_plain_data(tmp_path: Path) -> None:
    """A parallel import's workers pickle each chunk's result for the importing process: its
    list rows go as tuples of text and numbers (what the work file stores), not as an object
    each, and are stored as the rows they were made from."""
    notices = tmp_path / "notices.csv"
    generate(notices, 200)
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    index = ResidentIndex(tmp_path / "residents.sqlite")
    index.load_extract(RESIDENTS, TENANT)
    try:
        parser = NoticeParser(load_section(None), "cp932", TENANT, "武雄市")
        matcher = OwnerMatcher(index, TENANT, "武雄市")
        with notices.open("rb") as stream:
            chunk = list(split_lines(stream))
        result = ChunkWork(hub, parser, matcher, TENANT).process(chunk, at_head=True)
        again = OwnerMatcher(index, TENANT, "武雄市")
        parser.header_seen = True
        listed = [
            row
            for raw in chunk[1:]
            if isinstance(notice := parser.parse(raw), Notice)
            for row in rows_for(notice, again, notice.review)
        ]
    finally:
        index.close()
        hub.close()
    data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"ListRow" not in data and len(result.rows) == len(listed) > 200
    assert pickle.loads(data).rows == result.rows == [row.stored() for row in listed]
