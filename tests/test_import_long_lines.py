"""A line with no LF for more than ``MAX_LINE`` bytes (a file whose lines end in CR alone, or
garbage): only its head is kept, the rest is skipped up to the next LF, and the parser refuses
it RK-IMP006 — memory stays bounded and the lines after it are read as ever."""

from __future__ import annotations

import csv
import io
import tracemalloc
from pathlib import Path

from bus.hub import Hub
from bus.imports.generator import generate
from bus.imports.lines import MAX_LINE, split_lines
from bus.imports.runner import ImportOptions, run_import
from bus.settings import Settings

TENANT = "412066"


def test_an_overlong_line_keeps_its_head_and_the_offsets_of_the_lines_after_it() -> None:
    long = b"a,b,c\r" * (3 * MAX_LINE // 6)  # 3 MiB, CR line ends only
    data = b"one\r\ntwo\r\n" + long + b"\r\nthree\nfour"
    lines = list(split_lines(io.BytesIO(data), chunk=64 * 1024))
    assert [line.number for line in lines] == [1, 2, 3, 4, 5]
    assert [line.data for line in lines[:2]] == [b"one", b"two"]
    assert lines[2].data == long[: MAX_LINE + 1] and lines[2].offset == 10
    assert [(line.data, line.offset) for line in lines[3:]] == [
        (b"three", 10 + len(long) + 2),
        (b"four", 10 + len(long) + 8),
    ]
    assert [line.end for line in lines[:-1]] == [line.offset for line in lines[1:]]
    assert lines[-1].end == len(data)


def test_a_file_with_no_lf_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "cr-only.csv"
    with path.open("wb") as stream:
        for _ in range(64):
            stream.write(b"x" * (1 << 20))  # 64 MiB without a line end
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            lines = list(split_lines(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(line.number, len(line.data), line.end) for line in lines] == [
        (1, MAX_LINE + 1, 64 << 20)
    ]
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_an_import_refuses_the_overlong_line_and_imports_its_neighbours(tmp_path: Path) -> None:
    notices = tmp_path / "notices.csv"
    generate(notices, 6, encoding="utf-8")
    lines = notices.read_bytes().split(b"\n")
    lines[3] = lines[3] + b"\r" + lines[3] * (MAX_LINE // len(lines[3]) + 1)  # the third record
    notices.write_bytes(b"\n".join(lines))
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        summary = run_import(hub, ImportOptions(notices, TENANT, out_dir=tmp_path / "out"))
    finally:
        hub.close()
    assert (summary.new, summary.errors) == (5, 1)
    [report] = (tmp_path / "out").glob("*_エラー.csv")
    with report.open(encoding="utf-8-sig", newline="") as handle:
        errors = list(csv.reader(handle))
    assert [(row[0], row[3]) for row in errors[1:]] == [("4", "RK-IMP006")]
    assert "1 MiB" in errors[1][4] and "1 MiB" in errors[1][5]
