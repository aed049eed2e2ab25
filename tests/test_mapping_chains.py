"""The per-field fast paths of the mapping engine give what the general path gives.

* the section function with each operation written inline (``specialise``, the default)
  against the same section calling every operation (``specialise=False``), on the generated
  登記済通知 corpus (many seeds, values bent into every trap), the hand-made trap files and
  every golden input of every mapping;
* each operation's inline statement against the operation it stands for;
* the text operations' shortcuts (ASCII half width, katakana already in the standard form)
  against their character-by-character definitions;
* the CSV group split (one member when nothing is to split) against the general split;
* the bounded caches (the other date forms, 持分) against the uncached functions.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.imports import generator
from bus.mapping import Section, load_mapping
from bus.mapping import dates as dates_module
from bus.mapping import operations as ops
from bus.mapping import text as textops
from bus.mapping.codegen import section_program
from bus.mapping.formats.csv import CsvRecord, SplitGroup
from bus.mapping.golden import cases
from bus.mapping.memo import short_text_cache
from bus.mapping.values import DictRecord, FieldFailure, Source

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
NOTICES = ROOT / "samples" / "notices"
MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# what a real file bends a value into: widths, spaces, kana forms, 外字, markup, dates
TRAPS = [
    "ｻｲﾄｳ ｼﾞﾛｳ", "さいとう", "ガ", "カ゛", "　", " ", "\t", "\ue000", "\uf8ff", "\U000f0001",
    "＆", "&", "<", ">", "\r", "１２３", "ＡＢＣ", "～", "〜", "－", "髙", "①", "", "／",
    "令和6年13月1日", "R06.04.03", "㍻31年4月26日", "2024/04/08", "令和元年5月1日",
    "２分の１", "1/2", "3/2", "宅地", "謎地目", "4100000000011", "４１００００００００００１",
]  # fmt: skip


def bent_rows(seeds: int, per_seed: int) -> Iterator[list[str]]:
    """Generated 登記済通知 rows, a few fields of each replaced, prefixed or suffixed with a
    trap value (the column count kept)."""
    for seed in range(seeds):
        rng = random.Random(seed)
        for number in range(1, per_seed + 1):
            fields = generator.line(rng, number).split(",")
            for _ in range(rng.randint(0, 4)):
                i, trap = rng.randrange(len(fields)), rng.choice(TRAPS)
                fields[i] = rng.choice([trap, fields[i] + trap, trap + fields[i]])
            yield fields


def trap_rows() -> Iterator[list[str]]:
    """The data lines of the hand-made trap file that have the header's 18 fields."""
    for line in (NOTICES / "traps-cp932.csv").read_bytes().split(b"\r\n")[1:]:
        try:
            fields = line.rstrip(b"\x1a").decode("cp932").split(",")
        except UnicodeDecodeError:
            continue
        if len(fields) == 18:
            yield fields


def outcome(section: Section, specialise: bool, source: Source) -> tuple[Any, list[Any]]:
    """What the section function writes into a fresh target, and every failure it reports
    (code, parameters, the entry's position)."""
    program = section_program(
        section.entries, section.service, section.direction == "inbound", specialise=specialise
    )
    return _run(program, section, source)


def _run(program: Any, section: Section, source: Source) -> tuple[Any, list[Any]]:
    target = DictRecord() if section.direction == "inbound" else section.format.new_target()
    reported: list[Any] = []

    def report(error: Exception, entry: Any) -> None:
        params = error.params if isinstance(error, FieldFailure) else type(error).__name__
        reported.append((str(error), params, entry.position))

    program(source, target, {**section.params, "tenant": "412066"}, report)
    return _plain(target.data), reported


def _plain(data: dict[Any, Any]) -> dict[Any, Any]:
    """A target's data with group members as plain dicts (comparable with ==)."""
    return {
        repr(key): [_plain(m.data) for m in value] if isinstance(value, list) else value
        for key, value in data.items()
    }


def houmu() -> Section:
    section = load_mapping(MAPPINGS / "houmu.yaml").section("RegistrationNotice", "inbound")
    assert section is not None
    return section


def test_specialised_and_general_sections_agree_on_the_notice_corpus() -> None:
    section = houmu()
    fast = section.program
    general = section_program(section.entries, section.service, True, specialise=False)
    assert "value.strip(" in fast.source  # type: ignore[attr-defined]  # trim is inlined …
    assert "value.strip(" not in general.source  # type: ignore[attr-defined]  # … here called
    checked = reported = 0
    for fields in [*trap_rows(), *bent_rows(seeds=12, per_seed=500)]:
        record = section.format.record(fields)  # type: ignore[attr-defined]
        expected = _run(general, section, record)
        assert _run(fast, section, record) == expected, fields
        checked += 1
        reported += bool(expected[1])
    assert checked > 6000 and reported > 500  # failures compared too, not only good rows


def test_a_csv_sections_values_are_not_checked_for_text_attributes() -> None:
    """A CSV record holds text only: its section reads it without the Text check (the
    comparison above runs it against the general section, which checks); an XML section,
    whose values may carry attributes, keeps every check."""
    section = houmu()
    checked = section_program(section.entries, section.service, True)
    check = "value.__class__ is Text"
    assert section.program.source.count(check) < checked.source.count(check)  # type: ignore[attr-defined]
    tainou = load_mapping(MAPPINGS / "tainou.yaml").sections[("DelinquencyActionNotice", "inbound")]
    plain = section_program(tainou.entries, tainou.service, True)
    assert tainou.program.source == plain.source  # type: ignore[attr-defined]
    assert check in plain.source  # type: ignore[attr-defined]


GOLDEN_MAPPINGS = ["houmu.yaml", "houmu_fixed.yaml", "shuno.yaml", "tainou.yaml", "kokuho.yaml"]


@pytest.mark.parametrize("name", GOLDEN_MAPPINGS)
def test_specialised_and_general_sections_agree_on_every_golden_input(name: str) -> None:
    mapping = load_mapping(MAPPINGS / name)
    found = 0
    for case in cases(mapping):
        section = mapping.section(case.service, case.direction)
        assert section is not None
        for _, source in _sources(section, case.input.read_bytes()):
            assert outcome(section, True, source) == outcome(section, False, source)
            found += 1
    assert found


def _sources(section: Section, data: bytes) -> Iterator[tuple[int, Source]]:
    if section.direction == "inbound":
        for number, source in section.format.records(data):
            assert not isinstance(source, Exception)
            yield number, source
    else:
        yield 1, section.source(data)


def test_the_fixed_width_trap_file_agrees() -> None:
    mapping = load_mapping(MAPPINGS / "houmu_fixed.yaml")
    section = mapping.section("RegistrationNotice", "inbound")
    assert section is not None
    lines = (NOTICES / "traps-fixed-cp932.dat").read_bytes().split(b"\r\n")
    read = 0
    for line in lines:
        try:
            source = section.format.read(line)
        except FieldFailure:
            continue
        assert outcome(section, True, source) == outcome(section, False, source)
        read += 1
    assert read >= 5


# --- each inline statement against its operation -------------------------------------------

INLINED = {
    "trim both": ops.trim("both"),
    "trim left": ops.trim("left"),
    "trim right": ops.trim("right"),
    "width half": ops.width("half"),
    "gaiji unknown": ops.gaiji_in({}, "none", "〓"),
    "extract": ops.extract(re.compile("^(?:.+?日|[0-9]{4}/[0-9]{1,2}/[0-9]{1,2})(.*)$")),
    "extract empty group": ops.extract(re.compile("(a)?ｱ")),
    "kana": ops.kana(),
    "share": ops.share(),
    "codes error": ops.codes({"宅地": "1", "ｱ": "", "2": "3"}, "t", "error", None),
    "codes pass": ops.codes({"宅地": "1", "ｱ": ""}, "t", "pass", None),
    "codes default": ops.codes({"宅地": "1"}, "t", "default", "ｱ"),
}
PIECES = [*"aZ09 \t\u3000！～｡ﾟｱｶﾞかカ゛ー髙&<\r\n", "\ue000", "\uf8ff", "\U000f0001", "\uff5f"]
# and what the other inline statements look for: dates, 持分, codes, standard kana
PIECES += ["日", "2024/4/1", "令和6年4月1日", "分の", "/", "1", "2", "２", "宅地", "ア", "\x85"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)


def inline_function(operation: Any) -> Any:
    inline = operation.inline
    assert isinstance(inline, ops.Inline)
    names = [f"b{i}" for i in range(len(inline.bound))]
    namespace = dict(zip(names, inline.bound, strict=True))
    body = inline.code.format(*names).replace("\n", "\n    ")
    exec(f"def run(value):\n    {body}\n    return value\n", namespace)
    return namespace["run"]


def _result(function: Any, value: str) -> Any:
    """What ``function`` gives, or the code and parameters of its FieldFailure."""
    try:
        return function(value)
    except FieldFailure as failure:
        return failure.code, failure.params


@MANY
@given(st.sampled_from(sorted(INLINED)), TEXT)
def test_each_inline_statement_does_what_its_operation_does(name: str, value: str) -> None:
    operation = INLINED[name]
    assert _result(inline_function(operation), value) == _result(operation, value)


def test_the_inline_statements_meet_more_than_one_outcome() -> None:
    """Each operation above keeps, changes or refuses the examples in more than one way."""
    samples = ["2024/4/1宅地", "宅地", "ｱ", "1/2", "２分の１", "3/2", "ア", "ｱｲ", "\ue000", " x１ "]
    for name, operation in INLINED.items():
        outcomes = set()
        for value in samples:
            result = _result(operation, value)
            changed = "refused" if isinstance(result, tuple) else "changed"
            outcomes.add("kept" if result == value else changed)
        assert len(outcomes) > 1, name


def test_no_private_use_character_is_printable() -> None:
    """What the 外字 step's first check rests on: text that isprintable holds no character
    the private-use scan looks for (they are all category Co or Cn)."""
    ranges = [(0xE000, 0xF8FF), (0xF0000, 0x10FFFF)]
    assert not any(chr(code).isprintable() for low, high in ranges for code in range(low, high + 1))
    assert "武雄　髙﨑①ｱ～".replace("　", "").isprintable()


def test_the_gaiji_entry_of_a_section_is_inlined_with_its_finish() -> None:
    finishes = [e.plan.finish for e in houmu().entries if e.plan.finish is not None]
    gaiji = [f for f in finishes if isinstance(getattr(f, "inline", None), ops.Inline)]
    assert gaiji
    for value in ["武雄", "武\ue000雄", "\uf8ff", " 髙\U000f0001 "]:
        for finish in gaiji:
            assert inline_function(finish)(value) == finish(value)


# --- text shortcuts against their definitions -----------------------------------------------


def half_width_by_character(text: str) -> str:
    """The definition: 　 → space, ！–～ (U+FF01–U+FF5E) → ASCII, anything else as it is."""
    return "".join(
        " " if ch == "\u3000" else chr(ord(ch) - 0xFEE0) if "！" <= ch <= "～" else ch
        for ch in text
    )


def test_half_width_of_every_character() -> None:
    for code in range(0x10000):
        ch = chr(code)
        assert textops.to_half_width(ch) == half_width_by_character(ch), hex(code)
        assert textops.to_half_width(f"a{ch}") == half_width_by_character(f"a{ch}")


@MANY
@given(TEXT)
def test_half_width_of_any_text(text: str) -> None:
    assert textops.to_half_width(text) == half_width_by_character(text)


KANA = st.text(
    alphabet=st.sampled_from([*"アガヴヶーヽヷカ\u3099゛ｶﾞﾟがゔ", "\u3000", " ", "\t", "・", "A"]),
    max_size=10,
)


@MANY
@given(KANA)
def test_katakana_shortcut_gives_the_general_conversion(text: str) -> None:
    assert textops.to_katakana(text) == textops._katakana(text)


def test_katakana_shortcut_for_every_character_and_space_position() -> None:
    """Each BMP character alone, between katakana and around a full-width space."""
    for code in range(0x10000):
        ch = chr(code)
        if unicodedata.category(ch) == "Cs":
            continue
        for text in (ch, f"ア{ch}", f"{ch}ア", f"ア\u3000{ch}", f"{ch}\u3000ア"):
            assert textops.to_katakana(text) == textops._katakana(text), hex(code)
    for text in ("タカハシ　イチロウ", "タカハシ　　イチロウ", "　タカハシ", "タカハシ　"):
        assert textops.to_katakana(text) == textops._katakana(text)


# --- the CSV group split --------------------------------------------------------------------


def split_by_definition(row: dict[str, str], key: SplitGroup) -> list[dict[str, str]]:
    """The definition: member i holds the i-th part of every group column (or ""); there are
    as many as the non-empty column with the most parts."""
    parts = {c: (row.get(c) or "").split(key.separator) for c in key.columns}
    count = max((len(p) for c, p in parts.items() if row.get(c)), default=0)
    return [{c: p[i] if i < len(p) else "" for c, p in parts.items()} for i in range(count)]


CELL = st.text(alphabet=st.sampled_from(list("ab／/, ")), max_size=6)


@MANY
@given(
    st.sampled_from(["／", "/", "//"]),
    st.dictionaries(st.sampled_from(["x", "y", "z", "w"]), CELL, max_size=4),
)
def test_group_split_gives_the_members_by_definition(separator: str, row: dict[str, str]) -> None:
    key = SplitGroup(separator, ["x", "y", "z"])
    members = CsvRecord(row).groups(key)
    assert all(isinstance(m, CsvRecord) for m in members)
    assert [dict(m) for m in members] == split_by_definition(row, key)  # type: ignore[call-overload]


# --- the bounded caches ---------------------------------------------------------------------


@MANY
@given(st.text(alphabet=st.sampled_from(list("0123456789/.-R年月日令和平成㍻元 ")), max_size=14))
def test_cached_dates_read_as_uncached(text: str) -> None:
    assert dates_module.iso_day(text) == dates_module._iso(text)
    assert dates_module.iso_day(text) == dates_module.iso_day(text)  # from the cache


def test_only_short_texts_are_kept_and_at_most_maxsize() -> None:
    calls: list[str] = []

    @short_text_cache(maxsize=3, longest=5)
    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    assert [upper(t) for t in ["ab", "ab", "abcdef", "abcdef"]] == ["AB", "AB", "ABCDEF", "ABCDEF"]
    assert calls == ["ab", "abcdef", "abcdef"]  # the long text computed each time, never kept
    for text in ["c", "d", "e", "f"]:
        upper(text)
    assert upper.cache_info().currsize == 3
    assert upper.__wrapped__("x") == "X"
    dates_module._cached_iso.cache_clear()
    assert dates_module.iso_day("R060403") == "2024-04-03"
    assert dates_module.iso_day("R060403" + " " * 40) is None  # 47 characters: not a date
    assert dates_module._cached_iso.cache_info().currsize == 1


@MANY
@given(st.text(alphabet=st.sampled_from(list("0123456789１２３分の/／持 ")), max_size=8))
def test_cached_share_reads_as_uncached(text: str) -> None:
    assert textops.share(text) == textops.share.__wrapped__(text)
    assert textops.share(text) == textops.share.__wrapped__(text)


def test_every_share_and_date_of_a_kind_is_cached_apart() -> None:
    """Texts of one length and shape (1/2, 1/3, 2/3 …; every day in two forms) each get
    their own answer, from the cache as when computed."""
    full = str.maketrans("0123456789", "０１２３４５６７８９")
    shares = [
        text
        for n in range(0, 12)
        for d in range(0, 12)
        for text in (f"{n}/{d}", f"{d}分の{n}", f"{d}分の{n}".translate(full), f"持分{n}／{d}")
    ]
    days = [
        text
        for year in range(2019, 2027)
        for month in range(1, 14)
        for day in (1, 9, 28, 29, 30, 31, 32)
        for text in (
            f"{year}/{month:02d}/{day:02d}",
            f"R{year - 2018:02d}.{month:02d}.{day:02d}",
            f"{year}{month:02d}{day:02d}",
            f"R{year - 2018:02d}{month:02d}{day:02d}",
        )
    ]
    for _ in range(2):
        assert [textops.share(t) for t in shares] == [textops.share.__wrapped__(t) for t in shares]
        assert [dates_module.iso_day(t) for t in days] == [dates_module._iso(t) for t in days]
