"""One line of a notice file → a 登記済通知 service element, through the mapping engine.

Only three things make a record an error (RK-IMP001–003): an undecodable line, a wrong field
count (a fixed-width record of the wrong length in bytes: RK-IMP014), an unreadable key field
(受付年月日, 受付番号, 不動産番号). Any other field the mapping cannot translate is imported
empty and flagged 要確認, as are 外字 without a table (kept as private-use characters with
``alt="〓"``), half-width kana, a 所在 outside the tenant, an empty 登記原因 and co-owners'
持分 that do not add up to 1.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple

from bus.errors import make_finding
from bus.imports.encoding import UTF8, Undecodable, csv_fields, decode_line
from bus.imports.lines import MAX_LINE, RawLine
from bus.imports.normalize import address_key, town_address_key
from bus.mapping import Section
from bus.mapping.compiler import CompiledEntry
from bus.mapping.memo import short_text_cache
from bus.mapping.values import DictRecord, FieldFailure, Text
from bus.pipeline import Finding, Severity

KEY_ITEMS = {
    "receiptDate": "受付年月日",
    "receiptNumber": "受付番号",
    "realEstateNumber": "不動産番号",
}
GETA = "〓"  # 代替文字 the mapping gives a 外字 with no table (houmu.yaml gaiji: unknown)
MAX_BLANKED = 5  # a line with more untranslatable fields than this is not worth importing blind


_HALF_KANA = re.compile("[\uff61-\uff9f]")


class NoticeKey(NamedTuple):
    """受付年月日 + 受付番号 + 不動産番号, width-normalised (the mapping's output). A named
    tuple: one is made per record, with ``_new`` (no Python call)."""

    receipt_date: str
    receipt_number: str
    real_estate_number: str

    def text(self) -> str:
        return f"{self.receipt_date}|{self.receipt_number}|{self.real_estate_number}"


_new = tuple.__new__  # NoticeKey(*fields) is its Python __new__ calling this


@dataclass(slots=True)
class Notice:
    """A good record: the service element, its key, the values the list shows, and why staff
    should look at it (要確認)."""

    line: int
    key: NoticeKey
    service_xml: bytes
    values: dict[str, Any]
    review: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecordError:
    line: int
    offset: int
    field: str
    finding: Finding


class NoticeParser:
    """Parses lines of one file for one tenant (``town``: its name, for the 所在 check)."""

    def __init__(self, section: Section, encoding: str, tenant: str, town: str) -> None:
        self.section = section
        self.encoding = encoding
        self.decode = _decoder(encoding)
        self.params = {"tenant": tenant}
        self.town_key = address_key(town)
        # a file names few 所在 (大字), again and again: each one's town check is kept
        self.outside_town = short_text_cache(maxsize=1024, longest=200)(self._outside_town)
        self.columns: list[str] | None = getattr(section.format, "columns", None)
        self.header_seen = False
        self._by_item, self._by_member = _columns_by_item(section.entries)

    def parse(self, raw: RawLine, blank: Collection[str] = ()) -> Notice | RecordError | None:
        """The notice, the record error, or None for the header row. ``blank``: columns to
        import empty (flagged 要確認), which the hub refused as they were written."""
        if len(raw.data) > MAX_LINE:  # split_lines kept only its head
            return self._error(raw, "", "RK-IMP006")
        try:
            decode = self.decode
            text = raw.data.decode(self.encoding) if decode is None else decode(raw.data)[0]
        except UnicodeDecodeError:
            return self._undecodable(raw)
        review: list[str] = []
        if _HALF_KANA.search(text):
            review.append("半角カナ")
        if self.columns is None:  # fixed width: the mapping reads the bytes itself
            source: Any = raw.data
            fields: list[str] = []
        else:
            split = csv_fields(text)
            if split is None:
                return self._error(raw, "", "RK-IMP006")
            fields = split
            if not self.header_seen and [f.strip() for f in fields] == self.columns:
                self.header_seen = True
                return None
            self.header_seen = True
            if len(fields) != len(self.columns):
                return self._error(
                    raw, "", "RK-IMP002", expected=len(self.columns), actual=len(fields)
                )
            source = fields
            for column in blank:
                fields[self.columns.index(column)] = ""
                review.append(f"{column}を読めないため空で取込み")
        return self._translate(raw, source, fields, review)

    def refused_columns(self, findings: Sequence[Finding]) -> set[str] | None:
        """The columns to blank so the hub can take a record it refused with ``findings``, or
        None when the refusal is not about columns it can do without: a key item, the
        envelope, a conflict in the store, or a fixed-width record. A required item missing
        from a group member (a co-owner with an empty name) blanks the whole group."""
        if self.columns is None:
            return None
        columns: set[str] = set()
        for finding in findings:
            if finding.severity is not Severity.ERROR:
                continue
            item = finding.item
            if item is None or item in KEY_ITEMS:
                return None
            found = self._by_item.get(item, set())
            if finding.code == "RK-XSD004":
                found = self._by_member.get(item, found)
            if not found:
                return None
            columns |= found
        return columns or None

    def _undecodable(self, raw: RawLine) -> RecordError:
        failed = decode_line(raw.data, self.encoding)
        assert isinstance(failed, Undecodable)
        return self._error(raw, "", "RK-IMP001", expected=failed.encoding, actual=failed.position)

    def _translate(
        self, raw: RawLine, source: Any, fields: list[str], review: list[str]
    ) -> Notice | RecordError:
        for _ in range(MAX_BLANKED + 1):
            record = (
                self.section.format.record(source)  # type: ignore[attr-defined]
                if fields
                else _read_fixed(self.section, source)
            )
            if isinstance(record, FieldFailure):
                if not fields:  # fixed width: the layout counts bytes, not fields
                    expected = getattr(self.section.format, "length", "?")
                    actual = record.params.get("actual", len(source))
                    return self._error(raw, "", "RK-IMP014", expected=expected, actual=actual)
                expected = record.params.get("expected", "layout")
                actual = record.params.get("actual", record.code)
                return self._error(raw, "", "RK-IMP002", expected=expected, actual=actual)
            translation = self.section.run(record, raw.number, self.params)
            output, translated = translation.output, translation.record
            if not translation.findings and output is not None and translated is not None:
                return self._notice(raw, output, translated, review)  # nearly always
            errors = [f for f in translation.findings if f.severity is Severity.ERROR]
            key_errors = [f for f in errors if f.item in KEY_ITEMS]
            if key_errors:
                first = key_errors[0]
                return self._key_error(raw, first.item or "", first.code)
            if translation.output is not None and translation.record is not None:
                return self._notice(raw, translation.output, translation.record, review)
            blanked = [_column(f) for f in errors]
            if not fields or not all(c in (self.columns or ()) for c in blanked):
                first = errors[0]
                return self._error(
                    raw,
                    "",
                    "RK-IMP004",
                    actual=",".join(f.code for f in errors),
                    reason_ja=first.message_ja,
                    reason_en=first.message_en,
                )
            for column in blanked:
                fields[self.columns.index(column)] = ""  # type: ignore[union-attr]
                review.append(f"{column}を読めないため空で取込み")
        return self._error(
            raw,
            "",
            "RK-IMP004",
            actual="RK-IMP004",
            reason_ja=f"読めない項目が {MAX_BLANKED} を超えます",
            reason_en=f"more than {MAX_BLANKED} fields cannot be read",
        )

    def _notice(
        self, raw: RawLine, output: bytes, record: DictRecord, review: list[str]
    ) -> Notice | RecordError:
        values = _values(record, review)
        number = values.get("realEstateNumber", "")
        if number and not (len(number) == 13 and number.isdigit()):
            return self._key_error(raw, "realEstateNumber", "13桁の数字ではありません")
        receipt = values.get("receiptNumber", "")
        if not (receipt.isdigit() and len(receipt) <= 10):
            return self._key_error(raw, "receiptNumber", "10桁以内の数字ではありません")
        if not values.get("registrationCause"):
            review.append("登記原因が空")
        total = _share_total(values)
        if total is not None and total != 1:
            review.append(f"持分の合計が1になりません: 合計 {total}")
        if self.outside_town(values.get("propertyLocation", "")):
            review.append("所在が団体外")
        key = _new(NoticeKey, (values.get("receiptDate", ""), receipt, number))
        return Notice(raw.number, key, output, values, review)

    def _outside_town(self, location: str) -> bool:
        """A 所在 written without its town (大字大町) is in the tenant's town."""
        key = town_address_key(location, self.town_key)
        return bool(self.town_key) and not key.startswith(self.town_key)

    def _key_error(self, raw: RawLine, item: str, reason: str) -> RecordError:
        return self._error(raw, KEY_ITEMS.get(item, item), "RK-IMP003", item=item, actual=reason)

    def _error(self, raw: RawLine, column: str, code: str, **params: Any) -> RecordError:
        item = params.pop("item", None)
        finding = make_finding(
            code,
            path=f"/line[{raw.number}]" + (f"/{column}" if column else ""),
            item=item,
            name_ja=column or None,
            line=raw.number,
            **params,
        )
        return RecordError(raw.number, raw.offset, column, finding)


def _decoder(encoding: str) -> Callable[[bytes], tuple[str, int]] | None:
    """The codec's own decode function (what ``bytes.decode`` calls after looking the codec
    up by name, for every line), or None for UTF-8, which ``bytes.decode`` has built in, and
    for a name no codec has (``bytes.decode`` then raises, as it always has)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return None
    return None if info.name == UTF8 else info.decode


def header_problem(fields: list[str], columns: list[str]) -> str | None:
    """Why the file's first line, a header row naming columns, does not match the layout's
    (None: it matches, or it is a record). A line naming two of the layout's columns is
    taken as a header: read by position, a reordered one would put every value in the wrong
    item (権利者住所 as the name)."""
    given = [field.strip() for field in fields]
    if given == columns or len(set(given) & set(columns)) < 2:
        return None
    if len(given) != len(columns):
        return f"{len(given)} 列 / {len(given)} columns ≠ {len(columns)}"
    position, found, expected = next(
        (i, g, c) for i, (g, c) in enumerate(zip(given, columns, strict=True), 1) if g != c
    )
    return f"{position}: {found} ≠ {expected}"


def _columns_by_item(
    entries: Sequence[CompiledEntry],
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each catalogue item's source columns, and for an item of a repeating group the
    columns of its whole group."""
    by_item: dict[str, set[str]] = {}
    by_member: dict[str, set[str]] = {}
    for entry in entries:
        if entry.plan.kind == "group":
            members, group = _columns_by_item(entry.plan.children)
            whole = set().union(*members.values()) if members else set()
            for item, columns in members.items():
                by_item.setdefault(item, set()).update(columns)
                by_member[item] = whole
            by_member.update(group)
        elif entry.item is not None and entry.plan.source_key is not None:
            by_item.setdefault(entry.item, set()).add(entry.label)
    return by_item, by_member


def _read_fixed(section: Section, data: bytes) -> Any:
    try:
        return section.format.read(data)
    except FieldFailure as failure:
        return failure


def _share_total(values: dict[str, Any]) -> Fraction | None:
    """The sum of the 権利者' 持分, exactly, when the notice registers the whole property
    and every 権利者 has a 持分 (the mapping writes each as n/d, or none when unreadable,
    and the column is then imported empty): else None, nothing to check. A part of the
    property (所有権一部移転, 山田太郎持分全部移転: the 持分 the 権利者 acquire) is not
    checked; 共有者全員持分全部移転 is the whole."""
    purpose = values.get("registrationPurpose", "")
    if "一部" in purpose or ("持分" in purpose and "共有者全員" not in purpose):
        return None
    shares = [holder.get("share", "") for holder in values["rightHolder"]]
    if not shares or not all(shares):
        return None
    if sum(map(len, shares)) > SHARES_KEPT:  # a long (odd) value is summed, never kept
        return _sum_of_shares(tuple(shares))
    return _kept_sum_of_shares(tuple(shares))


def _sum_of_shares(shares: tuple[str, ...]) -> Fraction:
    return sum((Fraction(share) for share in shares), Fraction(0))


# a file repeats a few 持分 lists (1/2 + 1/2, 1/3 × 3) over and over; Fraction is immutable
SHARES_KEPT = 64  # characters of all the 持分 of one notice together
_kept_sum_of_shares = lru_cache(maxsize=256)(_sum_of_shares)


def _column(finding: Finding) -> str:
    return finding.path.rsplit("/", 1)[-1]


def _values(record: DictRecord, review: list[str]) -> dict[str, Any]:
    """The record's items by catalogue id as text (groups as lists of dicts); a 外字 the
    mapping kept with 代替文字 〓 is flagged 要確認."""
    data = record.data
    # copied in C (text, nearly every value, stays as it is: a copy of the whole dict, which
    # a literal merged with it would build again key by key); then the others converted
    values: dict[str, Any] = data.copy()
    for key, value in data.items():
        if value.__class__ is not str:
            values[key] = _value(value, review)
    if "rightHolder" not in values:
        values["rightHolder"] = []
    if "obligor" not in values:
        values["obligor"] = []
    return values


def _value(value: Any, review: list[str]) -> Any:
    if isinstance(value, list):
        return [_values(member, review) for member in value]
    if isinstance(value, Text):
        if GETA in (value.attr("alt") or "") and "外字（変換表なし）" not in review:
            review.append("外字（変換表なし）")
        return value.text
    return value
