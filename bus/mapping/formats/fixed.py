"""Fixed-width records (固定長): fields counted in bytes of the record's encoding (CP932 by
default, or a mainframe codec registered under ``renkei.mapping.codecs``).

A field is ``{start: 1-based byte, bytes: n, pad: half|full|zero|none, type: text|zoned|
packed, align: left|right}``. Text is padded with half-width spaces (``half``), full-width
spaces 　 (``full``; an odd byte left over takes one half-width space) or zeros (``zero``,
right-aligned numbers). ``zoned`` is a zoned decimal (one digit per byte, the sign in the
last byte's zone: 0x3/0xC/0xF positive, 0x7/0xD negative); ``packed`` is COMP-3 (two digits
per byte, the last nibble the sign: 0xC/0xF positive, 0xD negative).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bus.mapping.formats import SpecError, check_encoding, option
from bus.mapping.hooks import Codec, find_codec
from bus.mapping.problems import STRUCTURE, UNKNOWN_KEY
from bus.mapping.values import DictRecord, FieldFailure, Source, Target, Text, Value

PADS = ("half", "full", "zero", "none")
TYPES = ("text", "zoned", "packed")
PATH_KEYS = frozenset({"start", "bytes", "pad", "type", "align", "name"})


@dataclass(frozen=True, slots=True)
class FixedField:
    start: int  # 0-based offset
    size: int
    pad: str
    type: str
    align: str
    label: str


@dataclass(frozen=True, eq=False)
class FixedGroup:
    """A repeating group (COBOL ``OCCURS``): ``occurs`` slots of ``size`` bytes from
    ``start`` (0-based); its fields' starts count from the slot's first byte. A blank slot
    is an absent member."""

    start: int
    size: int
    occurs: int
    fields: list[FixedField] = field(default_factory=list)


class FixedRecord:
    __slots__ = ("codec", "data")

    def __init__(self, data: bytes, codec: Codec) -> None:
        self.data = data
        self.codec = codec

    def get(self, key: Any) -> Value | None:
        assert isinstance(key, FixedField)
        raw = self.data[key.start : key.start + key.size]
        if key.type == "zoned":
            return _zoned_read(raw, key)
        if key.type == "packed":
            return _packed_read(raw, key)
        try:
            text = self.codec.decode(raw)
        except (UnicodeDecodeError, ValueError):
            raise _undecodable(raw, key, self.codec) from None
        if key.pad == "zero":
            return text.lstrip("0") or ("0" if text else "")
        if key.pad == "none":
            return text
        return text.strip(" \u3000")

    def groups(self, key: Any) -> list[Source]:
        assert isinstance(key, FixedGroup)
        members: list[Source] = []
        for slot in range(key.occurs):
            begin = key.start + slot * key.size
            chunk = self.data[begin : begin + key.size]
            if chunk.strip(b" ") and not _blank(chunk, self.codec):
                members.append(FixedRecord(chunk, self.codec))
        return members


def _undecodable(raw: bytes, key: FixedField, codec: Codec) -> FieldFailure:
    """RK-MAP020 when the field's bytes read once the character cut at its start or end is
    left out (a layout whose widths were counted in characters, not bytes), else RK-MAP007.

    A cut character leaves up to its length less one byte on either side: one for CP932's
    double-byte characters, up to three for UTF-8's four-byte ones (𠮷)."""
    most = _longest_character(codec) - 1
    for head in range(most + 1):
        for tail in range(most + 1):
            if (not head and not tail) or head + tail > len(raw):
                continue
            try:
                codec.decode(raw[head : len(raw) - tail])
            except (UnicodeDecodeError, ValueError):
                continue
            where = f"{key.start + 1}–{key.start + key.size}"
            return FieldFailure("RK-MAP020", actual=where, expected=len(codec.encode("あ")))
    return FieldFailure("RK-MAP007", expected="decode", actual=raw.hex())


def _longest_character(codec: Codec) -> int:
    """Bytes of the encoding's longest character: 𠮷's (4 in UTF-8) when it has one, else a
    全角 character's (2 in CP932)."""
    for sample in ("\U00020bb7", "あ"):
        try:
            return len(codec.encode(sample))
        except (UnicodeEncodeError, ValueError):
            continue
    return 2


def _blank(chunk: bytes, codec: Codec) -> bool:
    """Only spaces (half- or full-width); undecodable bytes are not blank (the fields that
    hold them report RK-MAP007)."""
    try:
        return not codec.decode(chunk).strip(" \u3000")
    except (UnicodeDecodeError, ValueError):
        return False


def _span(path: dict[str, Any]) -> tuple[int, int]:
    try:
        return int(path["start"]), int(path["bytes"])
    except (KeyError, TypeError, ValueError):
        raise SpecError("start and bytes must be whole numbers") from None


def _zoned_read(raw: bytes, key: FixedField) -> str:
    if not raw:
        return ""
    digits = []
    for byte in raw:
        digit = byte & 0x0F
        if digit > 9:
            raise FieldFailure("RK-MAP009", expected="zoned", actual=raw.hex())
        digits.append(str(digit))
    sign = "-" if raw[-1] >> 4 in (0x7, 0xD) else ""
    return sign + str(int("".join(digits)))


def _packed_read(raw: bytes, key: FixedField) -> str:
    if not raw:
        return ""
    nibbles = "".join(f"{byte:02x}" for byte in raw)
    digits, sign = nibbles[:-1], nibbles[-1]
    if not digits.isdigit() or sign not in "cdf":
        raise FieldFailure("RK-MAP009", expected="packed", actual=raw.hex())
    return ("-" if sign == "d" else "") + str(int(digits))


def _number(value: str, kind: str) -> tuple[bool, str]:
    negative = value.startswith("-")
    digits = value.removeprefix("-")
    if not digits.isascii() or not digits.isdigit():
        raise FieldFailure("RK-MAP009", expected=kind, actual=value[:20])
    return negative, digits


EOF_MARK = b"\x1a"  # the MS-DOS end-of-file byte (bus/imports/lines.py drops it too)


class FixedFormat:
    name = "fixed"
    multi_record = True

    def __init__(self, section: dict[str, Any]) -> None:
        length = section.get("record_length")
        if length is None or not str(length).isdigit() or int(length) < 1:
            raise SpecError("a fixed-width section needs record_length (bytes)", STRUCTURE)
        self.length = int(length)
        self.encoding = option(section, "encoding", "cp932")
        codec = find_codec(self.encoding)
        check_encoding(self.encoding, known=codec is not None)
        assert codec is not None
        self.codec = codec
        separator = {"crlf": b"\r\n", "lf": b"\n", "none": b""}.get(
            option(section, "separator", "crlf")
        )
        if separator is None:
            raise SpecError("separator must be crlf, lf or none")
        self.separator: bytes = separator
        self.fields: list[FixedField] = []

    def compile_path(self, path: Any, group: Any, writing: bool) -> Any:
        if not isinstance(path, dict):
            raise SpecError("a fixed-width path is {start, bytes, pad, type}")
        unknown = sorted(set(path) - PATH_KEYS)
        if unknown:  # a misspelt pad or type would silently give the default
            raise SpecError(
                f"unknown key(s) in a fixed-width path: {', '.join(unknown)} "
                f"(one of {', '.join(sorted(PATH_KEYS))})",
                UNKNOWN_KEY,
                ", ".join(unknown),
            )
        start, size = _span(path)
        pad, kind = str(path.get("pad") or "half"), str(path.get("type") or "text")
        align = str(path.get("align") or ("right" if pad == "zero" else "left"))
        if pad not in PADS or kind not in TYPES or align not in ("left", "right"):
            raise SpecError(f"pad must be one of {PADS}, type one of {TYPES}, align left|right")
        length, fields = (group.size, group.fields) if group else (self.length, self.fields)
        if start < 1 or size < 1 or start - 1 + size > length:
            where = "the group's slot" if group else "the record"
            raise SpecError(f"bytes {start}..{start + size - 1} lie outside {where} ({length})")
        field = FixedField(
            start - 1, size, pad, kind, align, str(path.get("name") or f"{start}+{size}")
        )
        for other in fields:
            if (
                other != field
                and field.start < other.start + other.size
                and other.start < field.start + field.size
            ):
                raise SpecError(f"bytes {start}..{start + size - 1} overlap field {other.label}")
        if field not in fields:
            fields.append(field)
        return field

    def compile_group(self, spec: dict[str, Any], parent: Any, writing: bool) -> Any:
        """``path: {start, bytes, occurs}``: ``occurs`` slots of ``bytes`` each (inbound)."""
        path = spec.get("path")
        if writing or parent is not None or not isinstance(path, dict):
            raise SpecError(
                "a fixed-width group is inbound, not nested, with path: {start, bytes, occurs}"
            )
        start, size = _span(path)
        occurs = str(path.get("occurs") or "")
        if not occurs.isdigit() or int(occurs) < 1:
            raise SpecError("occurs must be a whole number (the slots of the group)")
        end = start - 1 + size * int(occurs)
        if start < 1 or size < 1 or end > self.length:
            raise SpecError(f"bytes {start}..{end} lie outside the record ({self.length})")
        self.compile_path(
            {"start": start, "bytes": end - start + 1, "name": str(spec.get("group"))}, None, False
        )  # the group's bytes, so a field overlapping them is refused
        return FixedGroup(start - 1, size, int(occurs))

    def _file_end(self, data: bytes) -> bytes:
        """The file without what offices' tools leave at its end and is no record: one MS-DOS
        end-of-file byte (0x1A), and one record separator after the last record's own (an
        empty last line) before it; nothing more (as the batch import's line reader). Without
        separators, a last byte 0x1A is the mark only when it is one byte too many (it may be
        a packed number's last byte)."""
        separator = self.separator
        if data.endswith(EOF_MARK) and (separator or len(data) % self.length == 1):
            data = data[:-1]
        if separator and data.endswith(separator + separator):
            data = data[: -len(separator)]
        return data

    def read(self, data: bytes) -> Source:
        data = self._file_end(data)
        if self.separator and data.endswith(self.separator):
            data = data[: -len(self.separator)]
        if len(data) != self.length:
            raise FieldFailure("RK-MAP005", expected=f"{self.length} bytes", actual=str(len(data)))
        return FixedRecord(data, self.codec)

    def records(self, data: bytes) -> Iterator[tuple[int, Source | Exception]]:
        data = self._file_end(data)
        step = self.length + len(self.separator)
        for number, offset in enumerate(range(0, len(data), step), start=1):
            chunk = data[offset : offset + self.length]
            after = data[offset + self.length : offset + step]
            if len(chunk) != self.length or (self.separator and after not in (self.separator, b"")):
                actual = str(len(chunk))
                if len(chunk) == self.length:  # the length is right, the separator is not
                    actual = f"{after!r} where the separator {self.separator!r} belongs"
                yield (
                    number,
                    FieldFailure("RK-MAP005", expected=f"{self.length} bytes", actual=actual),
                )
                return
            yield number, FixedRecord(chunk, self.codec)

    def new_target(self) -> Target:
        return DictRecord()

    def render(self, target: Target) -> bytes:
        assert isinstance(target, DictRecord)
        record = bytearray(b" " * self.length)
        for key, value in target.data.items():
            record[key.start : key.start + key.size] = self.field_bytes(key, _text(value))
        return bytes(record) + self.separator

    def field_bytes(self, key: FixedField, value: str) -> bytes:
        if key.type == "zoned":
            negative, digits = _number(value, "zoned")
            if len(digits) > key.size:
                raise FieldFailure("RK-MAP006", expected=str(key.size), actual=str(len(digits)))
            body = bytearray(digits.rjust(key.size, "0").encode("ascii"))
            if negative:
                body[-1] = 0x70 | (body[-1] & 0x0F)
            return bytes(body)
        if key.type == "packed":
            negative, digits = _number(value, "packed")
            nibbles = digits.rjust(key.size * 2 - 1, "0") + ("d" if negative else "c")
            if len(nibbles) > key.size * 2:
                raise FieldFailure("RK-MAP006", expected=str(key.size), actual=str(len(digits)))
            return bytes.fromhex(nibbles)
        try:
            encoded = self.codec.encode(value)
        except (UnicodeEncodeError, ValueError) as error:
            bad = getattr(error, "object", value)[getattr(error, "start", 0)]
            raise FieldFailure(
                "RK-MAP007", expected=self.encoding, actual=f"U+{ord(bad):04X}"
            ) from None
        if len(encoded) > key.size:
            raise FieldFailure("RK-MAP006", expected=str(key.size), actual=str(len(encoded)))
        room = key.size - len(encoded)
        if key.pad == "zero":
            fill = b"0" * room
        elif key.pad == "full":
            space = self.codec.encode("\u3000")
            fill = space * (room // len(space)) + b" " * (room % len(space))
        else:
            fill = b" " * room
        return fill + encoded if key.align == "right" else encoded + fill


def _text(value: Value) -> str:
    return value.text if isinstance(value, Text) else value
