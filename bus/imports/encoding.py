"""Which encoding a notice file is in, and decoding one line of it.

Detection reads the head of the file: a UTF-8 BOM decides at once; otherwise the first lines
holding non-ASCII bytes vote: valid UTF-8 or not (real CP932 text is almost never valid
UTF-8), so one corrupt line in a UTF-8 file does not make it CP932. CP932 (Windows-31J), not
Shift_JIS: offices write NEC and IBM extension kanji (髙 0xFBFC/0xEEE0, 﨑 0xFAB1,
① 0x8740) and 0x8160 as FULLWIDTH TILDE ～, all outside plain Shift_JIS.
User-defined codes (0xF040–0xF9FC, the office's 外字) decode to private-use characters,
which get an ``alt`` (〓) in the message. A decoded CSV line is split into its fields here too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import BinaryIO

from bus.imports.lines import BOM

UTF8 = "utf-8"
CP932 = "cp932"
SAMPLE_BYTES = 4 << 20
SAMPLE_LINES = 200


@dataclass(frozen=True, slots=True)
class Detected:
    encoding: str  # utf-8 | cp932
    bom: bool


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Why a line is not text: the first bad byte's position in the line (from 1)."""

    position: int
    encoding: str


def detect_encoding(stream: BinaryIO) -> Detected:
    stream.seek(0)
    head = stream.read(SAMPLE_BYTES)
    if head.startswith(BOM):
        return Detected(UTF8, bom=True)
    valid = invalid = 0
    lines = head.split(b"\n")
    if len(head) == SAMPLE_BYTES and len(lines) > 1:
        lines.pop()  # the last line may be cut in the middle of a character
    for line in lines:
        if line.isascii():
            continue
        try:
            line.decode(UTF8)
            valid += 1
        except UnicodeDecodeError:
            invalid += 1
        if valid + invalid >= SAMPLE_LINES:
            break
    # a vote, so one corrupt line in a UTF-8 file does not turn the whole file into CP932
    return Detected(UTF8 if valid >= invalid else CP932, bom=False)


def decode_line(data: bytes, encoding: str) -> str | Undecodable:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        return Undecodable(error.start + 1, encoding)


def csv_fields(text: str) -> list[str] | None:
    """The fields of one CSV line as :mod:`csv` reads them, or ``None`` when csv refuses the
    line (a CR outside quotes, a field over csv's limit). A line without a quote, a line-end
    or NUL character, and no longer than that limit (nearly every line) is only split at its
    commas: csv.reader gives the same fields (tests/test_import_fastpaths.py)."""
    if (
        '"' in text
        or "\r" in text
        or "\n" in text
        or "\0" in text
        or len(text) > csv.field_size_limit()
    ):
        try:
            return next(csv.reader([text]))
        except csv.Error:
            return None
    return text.split(",")
