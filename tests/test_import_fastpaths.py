"""The import's decode + parse gives, with every fast path on, exactly what the general path
gives: the same notices (service element, key, values, 要確認) and the same record errors, on
the generated corpus (many seeds, three encodings, rows bent into every trap, quoted lines)
and on the hand-made trap files.

The general path: CSV lines read by :mod:`csv`, the section function calling every operation
(``specialise=False``), the text operations, the group split and the date, 持分 and address
functions by their definitions, no cache.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.imports import envelope, generator, normalize, records
from bus.imports.encoding import csv_fields, detect_encoding
from bus.imports.lines import BOM, _clean, split_lines
from bus.imports.records import Notice, NoticeParser, RecordError
from bus.mapping import Section, dates, load_mapping
from bus.mapping import text as textops
from bus.mapping.codegen import section_program
from bus.mapping.formats.csv import CsvRecord, SplitGroup
from bus.mapping.values import Text
from tests.test_mapping_chains import (
    TRAPS,
    bent_rows,
    half_width_by_character,
    split_by_definition,
)

ROOT = Path(__file__).resolve().parents[1]
NOTICES = ROOT / "samples" / "notices"


# --- CSV lines ------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=st.sampled_from(list("ab,\"\r\n\0 \t'\x0b\x0c\x1c\u2028\x85令")), min_size=1)
)
def test_a_line_splits_as_csv_reads_it(text: str) -> None:
    try:
        expected: list[str] | None = next(csv.reader([text]))
    except csv.Error:
        expected = None
    assert csv_fields(text) == expected


def test_a_field_over_the_csv_limit_is_refused_as_csv_refuses_it() -> None:
    line = "a," + "b" * (csv.field_size_limit() + 1)
    with pytest.raises(csv.Error):
        next(csv.reader([line]))
    assert csv_fields(line) is None
    assert csv_fields(line[:-2]) == next(csv.reader([line[:-2]]))


def test_corpus_lines_split_as_csv_reads_them() -> None:
    for fields in bent_rows(seeds=3, per_seed=300):
        line = ",".join(fields)
        if "\r" not in line:  # a bare CR: refused (above)
            assert csv_fields(line) == next(csv.reader([line]))


# --- raw lines ------------------------------------------------------------------------------


def lines_by_definition(data: bytes, start: int) -> list[tuple[int, int, bytes, int]]:
    """Every line cut at LF, each cleaned by ``_clean`` (BOM, CR, EOF mark), blanks (empty,
    or white space only) skipped."""
    found, offset = [], start
    parts = data[start:].split(b"\n")
    for number, part in enumerate(parts, start=1):
        last = number == len(parts)
        end = offset + len(part) + (0 if last else 1)
        line = _clean(part, offset)
        if line and not line.isspace():
            found.append((number, offset, line, end))
        offset = end
    return found


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"a", b",", b"\r", b"\n", b"\x1a", b" ", b"\t", BOM, b"\x82\xa0"]),
        max_size=40,
    ),
    st.integers(1, 9),
    st.integers(0, 3),
)
def test_lines_split_as_cleaning_each_line_gives(parts: list[bytes], chunk: int, skip: int) -> None:
    data = b"".join(parts)
    start = min(skip, len(data))
    lines = split_lines(io.BytesIO(data), start=start, chunk=chunk)
    assert [tuple(line) for line in lines] == lines_by_definition(data, start)


def test_the_line_traps_reach_the_split() -> None:
    data = BOM + b"a\r\n\x1ab\r\n\r\nc\x1a\r\n\x1a"
    expected = [(1, 0, b"a", 6), (2, 6, b"\x1ab", 10), (4, 12, b"c", 16)]
    assert [tuple(line) for line in split_lines(io.BytesIO(data))] == expected
    assert lines_by_definition(data, 0) == expected


# --- decoding -------------------------------------------------------------------------------


def _decoded(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except UnicodeDecodeError as error:
        return error.encoding, error.start, error.end, error.reason


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=12) | st.text(max_size=8).map(lambda t: t.encode("cp932", "replace")),
    st.sampled_from(["cp932", "utf-8", "UTF8", "utf-8-sig", "shift_jis", "euc_jp"]),
)
def test_the_parsers_decoder_decodes_as_bytes_decode(data: bytes, encoding: str) -> None:
    decode = records._decoder(encoding)
    if decode is not None:
        general = _decoded(lambda raw: raw.decode(encoding), data)
        assert _decoded(lambda raw: decode(raw)[0], data) == general


def test_only_utf8_and_unknown_names_are_left_to_bytes_decode() -> None:
    assert records._decoder("utf-8") is None and records._decoder("no-such-codec") is None
    assert records._decoder("cp932") is not None
    section = load_mapping(ROOT / "mappings" / "houmu.yaml").section(
        "RegistrationNotice", "inbound"
    )
    assert section is not None
    parser = NoticeParser(section, "no-such-codec", "412066", "武雄市")
    with pytest.raises(LookupError):  # as bytes.decode raises for it, line by line
        parser.parse(next(split_lines(io.BytesIO(b"a,b\n"))))


# --- the whole parse ------------------------------------------------------------------------


def _groups_by_definition(self: CsvRecord, key: SplitGroup) -> list[Any]:
    return [CsvRecord(member) for member in split_by_definition(self, key)]


def general_section(layout: Path) -> Section:
    """The section loaded with the general functions bound, its function not specialised."""
    section = load_mapping(layout).section("RegistrationNotice", "inbound")
    assert section is not None
    program = section_program(section.entries, section.service, True, specialise=False)
    object.__setattr__(section, "program", program)
    return section


def parse_all(
    path: Path, section: Section, town: str, encoding: str | None = None, general: bool = False
) -> list[Any]:
    """Every line's result, as comparable values."""
    results: list[Any] = []
    with path.open("rb") as stream:
        parser = NoticeParser(section, encoding or detect_encoding(stream).encoding, "412066", town)
        if general:  # the town check computed for every line
            setattr(parser, "outside_town", parser._outside_town)  # noqa: B010
        for line in split_lines(stream):
            parsed = parser.parse(line)
            if isinstance(parsed, Notice):
                notice = (parsed.key, parsed.service_xml, repr(parsed.values), parsed.review)
                results.append(("notice", parsed.line, *notice))
            elif isinstance(parsed, RecordError):
                f = parsed.finding
                error = (f.code, f.path, f.message_ja, f.message_en, f.item, f.name_ja)
                results.append(("error", parsed.line, parsed.offset, parsed.field, *error))
            else:
                results.append(("header", line.number))
    return results


def corpus(directory: Path) -> list[tuple[Path, str, str | None]]:
    """(file, town, encoding or None to detect): the hand-made trap file, generated files in
    each encoding, and one of bent rows, some lines quoted."""
    files: list[tuple[Path, str, str | None]] = [(NOTICES / "traps-cp932.csv", "武雄市", None)]
    towns = ["武雄市", "", "鹿島市"]
    for seed in range(9):
        path = directory / f"seed{seed}.csv"
        encoding = ["cp932", "utf-8", "utf-8-sig"][seed % 3]
        generator.generate(path, 700, seed=seed, encoding=encoding)
        files.append((path, towns[seed % 3], None))
    rng = random.Random(7)
    lines = [generator.HEADER]
    for fields in bent_rows(seeds=4, per_seed=500):
        if any("\r" in field for field in fields):
            continue  # a bare CR in a line is a csv.Error either way, not a record
        if rng.random() < 0.1:
            fields = ['"' + f.replace('"', '""') + '"' for f in fields]
        lines.append(",".join(fields))
    bent = directory / "bent.csv"
    bent.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    files.append((bent, "武雄市", None))
    return files


def test_the_fast_parse_gives_what_the_general_parse_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = ROOT / "mappings" / "houmu.yaml"
    fast = load_mapping(layout).section("RegistrationNotice", "inbound")
    assert fast is not None
    files = corpus(tmp_path)
    expected_all = []
    with monkeypatch.context() as patch:
        for name, value in _general_patches():
            patch.setattr(*name, value)
        slow = general_section(layout)
        for path, town, encoding in files:
            expected_all.append(parse_all(path, slow, town, encoding, general=True))
    for (path, town, encoding), expected in zip(files, expected_all, strict=True):
        found = parse_all(path, fast, town, encoding)
        assert len(found) == len(expected)
        for got, want in zip(found, expected, strict=True):
            assert got == want, (path.name, want[1])
    every = [result for results in expected_all for result in results]
    codes = {r[4] for r in every if r[0] == "error"}
    reviews = {reason for r in every if r[0] == "notice" for reason in r[5]}
    assert {"RK-IMP001", "RK-IMP002", "RK-IMP003"} <= codes  # errors are compared too
    assert {"外字（変換表なし）", "半角カナ", "所在が団体外", "登記原因が空"} <= reviews


def _general_patches() -> list[tuple[tuple[Any, str], Any]]:
    return [
        ((records, "csv_fields"), lambda text: next(csv.reader([text]))),
        ((CsvRecord, "groups"), _groups_by_definition),
        ((textops, "to_half_width"), half_width_by_character),
        ((textops, "to_katakana"), textops._katakana),
        ((textops, "share"), textops.share.__wrapped__),
        ((dates, "_cached_iso"), dates._iso),
        ((normalize, "to_half_width"), half_width_by_character),
        ((records, "_kept_sum_of_shares"), records._sum_of_shares),
    ]


def test_the_fixed_width_trap_file_parses_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = ROOT / "mappings" / "houmu_fixed.yaml"
    path = NOTICES / "traps-fixed-cp932.dat"
    fast = load_mapping(layout).section("RegistrationNotice", "inbound")
    assert fast is not None
    with monkeypatch.context() as patch:
        for name, value in _general_patches():
            patch.setattr(*name, value)
        expected = parse_all(path, general_section(layout), "武雄市", "cp932", general=True)
    assert parse_all(path, fast, "武雄市", "cp932") == expected
    assert len(expected) >= 7


def test_the_trap_values_reach_the_parse() -> None:
    """The bent corpus really holds the traps (so the comparison above covers them)."""
    rows = [",".join(fields) for fields in bent_rows(seeds=4, per_seed=500)]
    for trap in ["\ue000", "ｻｲﾄｳ ｼﾞﾛｳ", "R06.04.03", "２分の１", "&", "　"]:
        assert trap in TRAPS and any(trap in row for row in rows)


def test_the_kept_town_checks_are_the_computed_ones() -> None:
    """Every 所在 of the corpus (bent by the traps) and every address, and places in and
    out of the town that begin alike, for three towns, twice: the parser's kept answer is the
    one computed."""
    places = [
        part
        for fields in bent_rows(seeds=2, per_seed=500)
        for column in (5, 12, 16)
        for part in fields[column].split("／")
    ]
    places += [
        f"{prefix}{town}大字{oaza}"
        for prefix in ("", "佐賀県", "佐賀県杵島郡")
        for town in ("武雄市武雄町", "武雄市北方町", "武雄町", "鹿島市", "武雄", "嬉野市")
        for oaza in generator.OAZA
    ]
    assert len(set(places)) > 500
    section = load_mapping(ROOT / "mappings" / "houmu.yaml").section(
        "RegistrationNotice", "inbound"
    )
    assert section is not None
    for town in ["武雄市", "", "武雄市武雄町"]:
        parser = NoticeParser(section, "utf-8", "412066", town)
        answers = [parser._outside_town(place) for place in places]
        assert len(set(answers)) == (2 if town else 1)
        for _ in range(2):
            assert [parser.outside_town(place) for place in places] == answers


def test_the_kept_share_totals_are_the_computed_ones() -> None:
    """持分 lists of every shape, twice (the second time from the kept answers): the total is
    the one summed; a list longer than SHARES_KEPT characters is summed and never kept."""
    records._kept_sum_of_shares.cache_clear()
    lists = [["1/2", "1/2"], ["1/3", "1/3", "1/3"], ["2/3"], ["1/2", "1/3"], ["1/1"]]
    lists += [["1/2", "1/2", "1/2"], ["3/7", "4/7"], ["1/6"] * 6, ["10/20", "20/40"]]
    long = ["1" + "0" * 39 + "/2" + "0" * 39, "1/2"]  # 84 characters: 1/2 + 1/2
    for _ in range(2):
        for shares in [*lists, long]:
            values = {"registrationPurpose": "所有権移転"}
            values["rightHolder"] = [{"share": share} for share in shares]  # type: ignore[assignment]
            expected = sum((Fraction(share) for share in shares), Fraction(0))
            assert records._share_total(values) == expected, shares
    assert records._kept_sum_of_shares.cache_info().currsize == len(lists)
    assert len("".join(long)) > records.SHARES_KEPT >= max(len("".join(s)) for s in lists)


def test_a_kept_group_getter_follows_a_column_added_after_it() -> None:
    """CsvRecord.groups reads the group's columns with the key's getter once made; a column
    the key gains after that (the compiler adds them one by one) is read too."""
    key = SplitGroup("／", ["x", "y"])
    rows = [{"x": "a／b", "y": "c", "z": "d"}, {"x": "a", "y": "b", "z": "c／e"}]
    for row in rows:  # the getter made and used with two columns
        assert _members(row, key) == split_by_definition(row, key)
    key.columns.append("z")
    for row in [*rows, {"x": "a", "y": "b", "z": "c"}]:
        members = _members(row, key)
        assert members == split_by_definition(row, key)
        assert all(set(m) == {"x", "y", "z"} for m in members)


def _members(row: dict[str, str], key: SplitGroup) -> list[dict[str, str]]:
    members = CsvRecord(row).groups(key)
    assert all(isinstance(m, CsvRecord) for m in members)
    return [dict(m) for m in members if isinstance(m, CsvRecord)]


def _values_by_definition(data: dict[str, Any], review: list[str]) -> dict[str, Any]:
    """Every item as text, a group as its members' values, both groups present; each 外字
    kept with 代替文字 〓 flagged once, in the order of the items."""
    values: dict[str, Any] = {"rightHolder": [], "obligor": []}
    for key, value in data.items():
        if isinstance(value, list):
            values[key] = [_values_by_definition(member.data, review) for member in value]
        elif isinstance(value, Text):
            if "〓" in (value.attr("alt") or "") and "外字（変換表なし）" not in review:
                review.append("外字（変換表なし）")
            values[key] = value.text
        else:
            values[key] = value
    return values


def test_the_values_are_the_translated_items_by_definition() -> None:
    section = load_mapping(ROOT / "mappings" / "houmu.yaml").section(
        "RegistrationNotice", "inbound"
    )
    assert section is not None
    seen: set[str] = set()
    for fields in bent_rows(seeds=3, per_seed=400):
        record = section.format.record(fields)  # type: ignore[attr-defined]
        translated = section.run(record, 1, {"tenant": "412066"}).record
        if translated is None:
            continue
        review: list[str] = ["半角カナ"]
        expected_review = list(review)
        values = records._values(translated, review)
        assert values == _values_by_definition(translated.data, expected_review)
        assert review == expected_review
        assert values["rightHolder"] is not translated.data.get("rightHolder")  # a copy
        seen |= {key for key, value in translated.data.items() if not isinstance(value, str)}
        seen |= {"外字"} if "外字（変換表なし）" in review else set()
    assert {"rightHolder", "obligor", "外字"} <= seen  # groups and 外字 were compared


@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=16), st.text(max_size=8))
@settings(max_examples=100, deadline=None)
def test_the_message_id_is_uuid5_by_definition(
    date: str, number: str, estate: str, tenant: str
) -> None:
    """Written from the SHA-1's hex digits, the messageId is the UUID v5 of tenant and key:
    the hub's Idempotent Receiver knows notices imported by earlier versions."""
    key = records.NoticeKey(date, number, estate)
    expected = uuid.uuid5(envelope._NAMESPACE, f"{tenant}|{key.text()}")
    assert envelope.message_id(tenant, key) == str(expected)


def test_the_message_ids_of_the_corpus_are_uuid5_by_definition() -> None:
    keys = [
        records.NoticeKey(f"2024-04-{d:02d}", str(n), f"41{n:011d}")
        for d in range(1, 29)
        for n in range(0, 4_000, 37)
    ]
    for key in [*keys, records.NoticeKey("", "", ""), records.NoticeKey("令和", "１２", "𠮟")]:
        expected = uuid.uuid5(envelope._NAMESPACE, f"412066|{key.text()}")
        assert envelope.message_id("412066", key) == str(expected)
    known = "c9da3675-9c0b-58eb-b18d-b8ac181008c6"  # as earlier versions computed it
    assert envelope.message_id("412066", keys[0]) == known
