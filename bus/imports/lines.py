"""Splits a file's raw bytes into lines before anything is decoded.

Offices write CRLF or LF, sometimes a UTF-8 BOM and sometimes a trailing EOF byte (0x1A, the
MS-DOS end-of-file mark). Splitting bytes first means one undecodable line can never spoil its
neighbours. Reading is in fixed-size chunks, so memory stays flat whatever the file size;
``start`` resumes at a byte offset the previous run recorded. A line longer than
``MAX_LINE`` bytes (a file whose lines end in CR alone is one such line) is kept only to that
length plus one byte, the rest skipped up to its LF: the parser reports it, and memory stays
bounded even then.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

BOM = b"\xef\xbb\xbf"
EOF_MARK = b"\x1a"
CHUNK = 1 << 20
MAX_LINE = 1 << 20  # bytes; a notice line is a few hundred


class RawLine(NamedTuple):
    """One physical line: its number (from 1), the file offset of its first byte, its bytes
    without the line end, and the offset of the next line. (A named tuple, so that
    ``split_lines`` makes one per line with no Python call: ``_new(RawLine, fields)``.)"""

    number: int
    offset: int
    data: bytes
    end: int


_new = tuple.__new__  # RawLine(*fields) is its Python __new__ calling this


def split_lines(
    stream: BinaryIO, *, start: int = 0, first_number: int = 1, chunk: int = CHUNK
) -> Iterator[RawLine]:
    """Every line from ``start``; blank lines (empty, or spaces and tabs only) are skipped
    (their number is still used up), a BOM at the head of the file and the EOF mark at its
    end are dropped."""
    stream.seek(start)
    offset, number, pending = start, first_number, b""
    while True:
        block = stream.read(chunk)
        pending += block  # after a skip, pending may hold whole lines even at the end
        lines = pending.split(b"\n")
        pending = lines.pop()
        for data in lines:
            end = offset + len(data) + 1
            # nearly every line: no BOM to look for, no EOF mark, at most a CR to drop
            if offset and EOF_MARK not in data:
                line = data[:-1] if data.endswith(b"\r") else data
            else:
                line = _clean(data, offset)
            if line and not line.isspace():
                yield _new(RawLine, (number, offset, line, end))
            number += 1
            offset = end
        if len(pending) > MAX_LINE:  # no LF in sight: keep its head, skip to the next LF
            head, skipped = pending[: MAX_LINE + 1], len(pending)
            while b"\n" not in (pending := stream.read(chunk)) and pending:
                skipped += len(pending)
            after, found, pending = pending.partition(b"\n")
            end = offset + skipped + len(after) + len(found)
            yield RawLine(number, offset, head, end)
            number, offset = number + 1, end
        elif not block:
            break
    if pending:
        line = _clean(pending, offset)
        if line and not line.isspace():
            yield RawLine(number, offset, line, offset + len(pending))


def _clean(data: bytes, offset: int) -> bytes:
    if offset == 0 and data.startswith(BOM):
        data = data[len(BOM) :]
    if data.endswith(b"\r"):
        data = data[:-1]
    # the EOF mark ends a file's last line (or stands alone on it); it is never data
    return data.rstrip(EOF_MARK) if data.endswith(EOF_MARK) else data
