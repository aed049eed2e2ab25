"""Batch import: splitting raw bytes into lines and decoding each line (encoding traps)."""

from __future__ import annotations

import io

import pytest

from bus.imports.encoding import CP932, UTF8, decode_line, detect_encoding
from bus.imports.lines import split_lines

HEADER = "受付年月日,受付番号"


def lines_of(data: bytes) -> list[tuple[int, int, bytes]]:
    return [(ln.number, ln.offset, ln.data) for ln in split_lines(io.BytesIO(data), chunk=7)]


def test_crlf_lf_bom_eof_mark_and_blank_lines() -> None:
    data = b"\xef\xbb\xbfa,1\r\nb,2\n\r\n\nc,3\r\n\x1a"
    assert lines_of(data) == [(1, 0, b"a,1"), (2, 8, b"b,2"), (5, 15, b"c,3")]
    assert lines_of(b"a\nb\x1a") == [(1, 0, b"a"), (2, 2, b"b")]
    assert lines_of(b"a\r\n  \r\n\t\nb\n \t") == [(1, 0, b"a"), (4, 9, b"b")]  # spaces only


def test_resume_from_an_offset_keeps_line_numbers() -> None:
    data = b"h\r\nx1\r\nx2\r\n"
    first = list(split_lines(io.BytesIO(data)))
    resumed = list(split_lines(io.BytesIO(data), start=first[1].end, first_number=3))
    assert [(ln.number, ln.data) for ln in resumed] == [(3, b"x2")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xef\xbb\xbf" + HEADER.encode(), (UTF8, True)),
        (HEADER.encode("utf-8"), (UTF8, False)),
        (HEADER.encode("cp932"), (CP932, False)),
        (b"ascii,only\r\n", (UTF8, False)),
        # one corrupt line does not turn a UTF-8 file into CP932
        ((HEADER + "\n髙橋\n").encode() + b"\x81\x20\n", (UTF8, False)),
    ],
)
def test_encoding_detection(data: bytes, expected: tuple[str, bool]) -> None:
    detected = detect_encoding(io.BytesIO(data))
    assert (detected.encoding, detected.bom) == expected


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"\x81\x60", "～"),  # 0x8160: FULLWIDTH TILDE in CP932 (WAVE DASH in plain Shift_JIS)
        (b"\xfb\xfc", "髙"),  # IBM extension
        (b"\xee\xe0", "髙"),  # NEC-selected IBM extension
        (b"\xfa\xb1", "﨑"),
        (b"\x87\x40", "①"),  # NEC special character
        (b"\x87\x7e", "㍻"),
        (b"\xf0\x40", "\ue000"),  # user-defined area: the office's 外字, a private-use character
    ],
)
def test_cp932_traps_decode(raw: bytes, text: str) -> None:
    assert decode_line(raw, CP932) == text


def test_an_undecodable_line_reports_its_byte_position() -> None:
    failed = decode_line("山田".encode("cp932") + b"\x81\x20", CP932)
    assert not isinstance(failed, str)
    assert failed.position == 5
