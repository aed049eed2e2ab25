"""The file-level conventions of municipal vendors' files: a 見出しレコード (header: tag and
the 全件/差分 flag) first, a 後書きレコード (trailer: tag and the record count) last.

Line formats (CSV, fixed width with a line separator) carry them as the first and last line;
fixed width without separators as the first and last record; XML as the root's ``flag`` and
``count`` attributes. The tokens after the tag are separated by a comma or spaces:
``H,1,20250401`` / ``T,3`` (CSV), ``H1 20250401`` / ``T000000003`` (fixed width).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bus.config.models import FileRecords
from bus.errors import make_finding
from bus.mapping.formats.fixed import EOF_MARK
from bus.pipeline import Finding
from bus.wareki import JST

_TOKENS = re.compile(r"[,\s]+")
CRLF = b"\r\n"


class Extent(StrEnum):
    FULL = "full"  # 全件
    DIFFERENTIAL = "differential"  # 差分


class FileRefused(ValueError):
    """The whole file is refused (nothing of it is taken)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


@dataclass(frozen=True, slots=True)
class Framed:
    """A file without its header and trailer: the data records' bytes, the 全件/差分 flag
    and the count the trailer declares (None without a trailer)."""

    data: bytes
    extent: Extent
    declared: int | None


def _tokens(line: str, tag: str) -> list[str]:
    return [token for token in _TOKENS.split(line[len(tag) :].strip()) if token]


def shape(line: str) -> str:
    """What a line that is not a header or trailer looks like, without its content: it is
    usually a data record (names, addresses), which a report never shows in clear."""
    if not line:
        return "0文字/chars"
    first = line[0] if line[0].isascii() and line[0].isprintable() else "?"
    return f"{first}… {len(line)}文字/chars"


def parse_header(line: str, records: FileRecords) -> Extent:
    tag = records.header or ""
    if not line.startswith(tag):
        raise FileRefused(make_finding("RK-FIL001", path="/header", actual=shape(line)))
    tokens = _tokens(line, tag)
    flags = {records.flags.full: Extent.FULL, records.flags.differential: Extent.DIFFERENTIAL}
    flag = tokens[0] if tokens else ""
    if flag not in flags:
        # a fixed-width header may write the flag right after the tag: H1 20250401
        flag = next((f for f in flags if line[len(tag) :].startswith(f)), flag)
    if flag not in flags:
        expected = f"{records.flags.full}=全件, {records.flags.differential}=差分"
        raise FileRefused(
            make_finding("RK-FIL004", path="/header", actual=flag[:8], expected=expected)
        )
    return flags[flag]


def parse_trailer(line: str, records: FileRecords) -> int:
    tag = records.trailer or ""
    tokens = _tokens(line, tag) if line.startswith(tag) else []
    if not tokens or not tokens[0].isdigit():
        raise FileRefused(make_finding("RK-FIL002", path="/trailer", actual=shape(line)))
    return int(tokens[0])


def _first_line(data: bytes) -> tuple[bytes, bytes]:
    line, separator, rest = data.partition(b"\n")
    return line.rstrip(b"\r"), rest if separator else b""


def _last_line(data: bytes) -> tuple[bytes, bytes]:
    body = data.rstrip(b"\r\n")
    cut = body.rfind(b"\n")
    line = body[cut + 1 :].rstrip(b"\r")
    return line, body[: cut + 1] if cut >= 0 else b""


def unframe(data: bytes, records: FileRecords, encoding: str, record_length: int = 0) -> Framed:
    """Split off the header and trailer (``record_length``: fixed width without separators,
    where they are records of that many bytes). Raises :class:`FileRefused`."""
    extent, declared = Extent.DIFFERENTIAL, None
    if encoding == "utf-8":
        data = data.removeprefix(codecs.BOM_UTF8)  # Windows tools write one
    if records.header:
        if record_length:
            head, data = data[:record_length], data[record_length:]
        else:
            head, data = _first_line(data)
        extent = parse_header(_text(head, encoding, "/header", "RK-FIL001"), records)
    if records.trailer:
        # one MS-DOS end-of-file mark after the trailer (0x1A), as offices' tools still write
        # it (with fixed-width records, only when it is the one byte too many)
        if data.endswith(EOF_MARK) and (not record_length or len(data) % record_length == 1):
            data = data[:-1]
        if record_length:
            tail, data = data[-record_length:], data[:-record_length]
        else:
            tail, data = _last_line(data)
        declared = parse_trailer(_text(tail, encoding, "/trailer", "RK-FIL002"), records)
    return Framed(data, extent, declared)


def _text(line: bytes, encoding: str, path: str, code: str) -> str:
    try:
        return line.decode(encoding)
    except UnicodeDecodeError:
        raise FileRefused(make_finding(code, path=path, actual=f"not {encoding}")) from None


def header_line(records: FileRecords, extent: Extent, created: datetime, csv: bool) -> str:
    flag = records.flags.full if extent is Extent.FULL else records.flags.differential
    stamp = created.astimezone(JST).strftime("%Y%m%d%H%M%S")  # read by 基幹 systems, in JST
    return f"{records.header},{flag},{stamp}" if csv else f"{records.header}{flag} {stamp}"


def trailer_line(records: FileRecords, count: int, csv: bool) -> str:
    return f"{records.trailer},{count}" if csv else f"{records.trailer}{count:09d}"
