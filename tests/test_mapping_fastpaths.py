"""The mapping engine's fast paths give the same answer as the general path they shortcut.

* dates: :func:`bus.mapping.dates.iso_day` (lookup tables) and
  :func:`bus.mapping.dates.calendar_day` (ISO / canonical 和暦 regex) against
  :func:`bus.mapping.dates.general_calendar_day` (the general 和暦 parser);
* XML reading: :class:`bus.mapping.formats.xml.XmlSource` (one pass over the document)
  against a step-by-step walk of each path (first element of each tag, as XPath ``[1]``);
* the standard writer without escaping against the escaping one.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from bus import era as era_table
from bus.mapping import load_mapping
from bus.mapping.dates import calendar_day, general_calendar_day, iso_day
from bus.mapping.formats.xml import GroupKey, XmlFormat, XmlSource
from bus.mapping.operations import format_date
from bus.mapping.standard import _writer, escape, write_service
from bus.mapping.values import DictRecord, Text

MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def general_iso(text: str) -> str | None:
    day = general_calendar_day(text)
    return None if day is None else day.isoformat()


# --- dates ---------------------------------------------------------------------------------

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _number(draw: st.DrawFn, low: int, high: int) -> str:
    value = draw(st.integers(low, high))
    form = draw(st.sampled_from(["plain", "zero", "three", "full", "kanji"]))
    if form == "zero":
        return f"{value:02d}"
    if form == "three":
        return f"{value:03d}"
    if form == "full":
        return str(value).translate(FULL_WIDTH)
    if form == "kanji" and value < 10:
        return "〇一二三四五六七八九"[value]
    return str(value)


@st.composite
def wareki_like(draw: st.DrawFn) -> str:
    """Text near the canonical form: every era (and a non-era), 元 and years 0–120, months
    0–13, days 0–32, zero-padded, full-width and kanji digits, a missing or extra part."""
    eras = [era.name for era in era_table.eras()] + ["西暦", "皇紀", ""]
    era = draw(st.sampled_from(eras))
    year = "元" if draw(st.integers(0, 9)) == 0 else _number(draw, 0, 120)
    month, day = _number(draw, 0, 13), _number(draw, 0, 32)
    tail = draw(st.sampled_from(["日", "", "日 ", "日頃"]))
    return f"{era}{year}年{month}月{day}{tail}"


def _days() -> list[date]:
    """Every day of the years around each era's start and the Gregorian reform, and every
    eleventh day (so every month-day over the years) from 明治 to 2040."""
    years = {era.start.year + offset for era in era_table.eras() for offset in (-1, 0, 1)}
    years |= {1872, 1873, 1900, 2000, 2024, 2100}
    days = [date(1868, 1, 1) + timedelta(days=n) for n in range(0, 63_000, 11)]
    for year in sorted(years):
        days += [date(year, 1, 1) + timedelta(days=n) for n in range(366)]
    return days


def test_every_day_written_canonically_reads_as_the_general_parser_reads_it() -> None:
    """Days from 明治 on in the registries' form, plain and zero-padded, in each era whose
    years 0–99 reach them (元年, change days, out-of-era years): the tables, the regex path
    and the general parser agree."""
    checked = 0
    for day in _days():
        for text in _written_forms(day):
            assert iso_day(text) == general_iso(text), text
            assert calendar_day(text) == general_calendar_day(text), text
            checked += 1
    assert checked > 20_000


def _written_forms(day: date) -> list[str]:
    """The canonical 和暦 of ``day`` in its era and, within a year, the previous era's."""
    forms = []
    for era in era_table.eras():
        number = day.year - era.start.year + 1
        if not 0 <= number <= 99:
            continue
        years = {str(number), f"{number:02d}"} | ({"元"} if number == 1 else set())
        for year in years:
            forms.append(f"{era.name}{year}年{day.month}月{day.day}日")
            forms.append(f"{era.name}{year}年{day.month:02d}月{day.day:02d}日")
    return forms


def test_every_day_written_with_separators_reads_as_the_general_parser_reads_it() -> None:
    """The same days as 2024/04/08, 2024-4-8, 2024年4月8日 and, in each era whose years 0–99
    reach them, R06.04.08, r6/4/8, 令和6.4.8 (and one separator mixed or missing), and days no
    year has or not that one (2/29, 4/31, 13/1 …): the tables and the general parser agree."""
    checked = 0
    edges = [era.start + timedelta(days=n) for era in era_table.eras() for n in (-1, 0, 1)]
    written = [(day.year, day.month, day.day) for day in [*_days()[::6], *edges]]
    impossible = [(2, 29), (2, 30), (4, 31), (13, 1), (0, 1), (1, 32), (1, 0)]
    written += [(year, *month_day) for year in range(1866, 2031) for month_day in impossible]
    for year, month, day in written:
        for text in _separated_forms(year, month, day):
            assert iso_day(text) == general_iso(text), text
            checked += 1
    assert checked > 50_000


def _separated_forms(year: int, month: int, day: int) -> list[str]:
    parts = [(str(year), year)]
    for era in era_table.eras():
        number = year - era.start.year + 1
        if 0 <= number <= 99:
            for token in (era.name, era.letter, era.letter.lower()):
                parts.append((f"{token}{number:02d}", number))
    forms = []
    for head, number in parts:
        for mark in "/.-":
            forms.append(f"{head}{mark}{month:02d}{mark}{day:02d}")
            forms.append(f"{head}{mark}{month}{mark}{day}")
        forms.append(f"{head}年{month}月{day}日")
        forms.append(f"{head.rstrip('0123456789')}{number}.{month}.{day}")
        forms.append(f"{head}/{month}.{day}")  # two separators: no date
        forms.append(f"{head}/{month}{day:02d}")
    return forms


def test_the_change_day_is_read_in_either_era() -> None:
    assert iso_day("平成31年5月1日") == iso_day("令和元年5月1日") == "2019-05-01"
    assert iso_day("平成31年5月2日") is None
    assert iso_day("令和元年4月30日") is None
    assert iso_day("明治6年1月1日") == "1873-01-01"
    assert iso_day("明治5年12月31日") is None  # lunisolar: no Gregorian day
    assert iso_day("令和6年2月29日") == "2024-02-29"
    assert iso_day("令和5年2月29日") is None
    assert iso_day(format_date(date(2024, 4, 1), "wareki")) == "2024-04-01"
    assert iso_day("R01.04.30") is None and iso_day("H31.04.30") == "2019-04-30"
    assert iso_day("0000/01/01") is None and iso_day("1500/02/29") is None


@MANY
@given(wareki_like())
def test_wareki_like_text(text: str) -> None:
    assert iso_day(text) == general_iso(text)
    assert calendar_day(text) == general_calendar_day(text)


@MANY
@given(st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True))
def test_iso_text(text: str) -> None:
    assert iso_day(text) == general_iso(text)
    assert calendar_day(text) == general_calendar_day(text)


DATE_CHARS = list("0123456789元年月日令和平成昭大明正治-/. 　Rr")


@MANY
@given(st.text(alphabet=st.sampled_from(DATE_CHARS), max_size=16))
def test_any_text(text: str) -> None:
    assert iso_day(text) == general_iso(text)
    assert calendar_day(text) == general_calendar_day(text)


# --- XML reading ---------------------------------------------------------------------------

NS = "urn:example:fast:1"
TAGS = ["a", "b", "c", "m"]
FIELDS = ["t:a", "t:b", "t:a/t:b", "t:a/t:c", "t:b/@k", "t:a/@k", "t:c/t:a/t:b", "text()"]
GROUP, MEMBER_FIELDS = "t:c/t:m", ["t:a", "t:b/@k", "t:a/t:b", "text()"]
THROUGH = ["t:c/t:m/t:a", "t:c/t:m/@k"]  # read at the top level through the first member


# a group whose members hold only text children is read a column at a time
FLAT_GROUPS = {"t:b/t:m": ["t:a", "t:b", "text()"], "t:c/t:m": ["t:a", "t:c"]}
SHAPES = {
    "nested": ([*FIELDS, *THROUGH], {GROUP: MEMBER_FIELDS}),
    "flat": (["t:a", "t:a/t:b", "t:b/@k"], FLAT_GROUPS),
}


def xml_format(
    shape: str,
) -> tuple[XmlFormat, list[tuple[str, Any]], list[tuple[str, GroupKey, list[tuple[str, Any]]]]]:
    fields, groups = SHAPES[shape]
    form = XmlFormat("t:r", {"t": NS})
    compiled = []
    for path, member_fields in groups.items():
        group = form.compile_group({"path": path}, None, writing=False)
        members = [(field, form.compile_path(field, group, False)) for field in member_fields]
        compiled.append((path, group, members))
    return form, [(path, form.compile_path(path, None, False)) for path in fields], compiled


def walk(element: etree._Element, path: str) -> str | None:
    """The reference reading: each step the first child of that tag, then text or attribute."""
    for step in path.split("/"):
        if step == "text()":
            break
        if step.startswith("@"):
            return element.get(step[1:])
        found = next(element.iterchildren(f"{{{NS}}}{step[2:]}"), None)
        if found is None:
            return None
        element = found
    return element.text or ""


def walk_group(element: etree._Element, path: str) -> list[etree._Element]:
    *parents, last = path.split("/")
    for step in parents:
        found = next(element.iterchildren(f"{{{NS}}}{step[2:]}"), None)
        if found is None:
            return []
        element = found
    return list(element.iterchildren(f"{{{NS}}}{last[2:]}"))


@st.composite
def element_xml(draw: st.DrawFn, depth: int = 0) -> str:
    """A random element of tags a/b/c/m (repeats, attributes, comments, PIs, mixed text)."""
    tag = draw(st.sampled_from(TAGS))
    attrs = draw(st.sampled_from(["", ' k="1"', ' k=""', ' x="2"', ' t:k="3"']))
    parts = [draw(st.sampled_from(["", "v", "&amp;", " ", "ｶﾅ"]))]
    if depth < 2:
        for _ in range(draw(st.integers(0, 4))):
            parts.append(
                draw(
                    st.one_of(element_xml(depth + 1), st.sampled_from(["<!--c-->", "<?p q?>", "w"]))
                )
            )
    return f"<t:{tag}{attrs}>{''.join(parts)}</t:{tag}>"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SHAPES)),
    st.lists(element_xml(), max_size=6),
    st.sampled_from(["", "x", "<!--c-->y"]),
)
def test_one_pass_reads_what_a_path_walk_reads(shape: str, children: list[str], text: str) -> None:
    form, fields, groups = xml_format(shape)
    document = f'<t:r xmlns:t="{NS}" k="r">{text}{"".join(children)}</t:r>'
    root = etree.fromstring(document.encode())
    source = form.source(root)
    for path, key in fields:
        assert source.get(key) == walk(root, path), path
    for path, group, members in groups:
        expected = walk_group(root, path)
        found = source.groups(group)
        assert len(found) == len(expected)
        for member, element in zip(found, expected, strict=True):
            assert isinstance(member, XmlSource) and member.element is element
            for field, key in members:
                assert member.get(key) == walk(element, field), field


def test_flat_groups_are_read_by_columns() -> None:
    form, _, groups = xml_format("flat")
    form.source(etree.fromstring(f'<t:r xmlns:t="{NS}"/>'.encode()))  # plans the shape
    assert all(group.node.columns is not None for _, group, _ in groups)
    assert form.root.children[f"{{{NS}}}c"].members is not None  # t:c holds only the group
    assert form.root.children[f"{{{NS}}}b"].members is None  # t:b has its own attribute
    nested, _, [(_, group, _)] = xml_format("nested")
    nested.source(etree.fromstring(f'<t:r xmlns:t="{NS}"/>'.encode()))
    assert group.node.columns is None


def test_one_pass_keeps_the_first_element_of_a_tag() -> None:
    form, fields, [(_, group, members)] = xml_format("nested")
    document = (
        f'<t:r xmlns:t="{NS}"><t:a k="1">first<t:c>x</t:c></t:a><t:a k="2">second<t:b>y</t:b>'
        "</t:a><t:c><t:m k='m1'><t:a>1</t:a></t:m><t:m><t:a>2</t:a></t:m></t:c></t:r>"
    )
    source = form.source(etree.fromstring(document.encode()))
    values = {path: source.get(key) for path, key in fields}
    assert values["t:a"] == "first" and values["t:a/@k"] == "1"
    assert values["t:a/t:c"] == "x" and values["t:a/t:b"] is None  # not the second t:a's
    assert values["t:c/t:m/t:a"] == "1" and values["t:c/t:m/@k"] == "m1"
    assert [m.get(members[0][1]) for m in source.groups(group)] == ["1", "2"]


# --- the standard writer -------------------------------------------------------------------

SERVICE = "DelinquencyActionNotice"
values = st.text(alphabet=st.sampled_from(list("ab1 &<>\r\n\"'令")), min_size=1, max_size=6)


@st.composite
def records(draw: st.DrawFn) -> DictRecord:
    record = DictRecord()
    for item in ("name", "address", "noticeNumber", "taxItem"):
        record.data[item] = draw(values)
    record.data["dueDate"] = Text(draw(values), (("iso", draw(values)),))
    for _ in range(draw(st.integers(0, 3))):
        member = record.group("seizure")
        member.data["seizedPropertyDescription"] = draw(values)
        member.data["seizureDate"] = draw(values)
    return record


@MANY
@given(records())
def test_the_writer_escapes_exactly_when_it_must(record: DictRecord) -> None:
    escaped, _ = _writer(SERVICE, True)(record.data)
    plain, texts = _writer(SERVICE, False)(record.data)
    written = write_service(SERVICE, record)
    assert written == b"".join(escaped)
    text = written.decode()  # the values encoded one by one: the same as the text encoded
    assert text.startswith(f"<svc:{SERVICE} ") and text.endswith(f"</svc:{SERVICE}>")
    if not any(ch in texts for ch in "&<>\r"):
        assert plain == escaped
    values = [v for v in record.data.values() if isinstance(v, str)]
    values += [v for m in record.groups("seizure") for v in m.data.values()]  # type: ignore[attr-defined]
    assert sorted(texts) == sorted("".join(values))  # every text value written is checked


def test_xpath_fields_are_evaluated_in_flat_members_too() -> None:
    form = XmlFormat("t:r", {"t": NS})
    group = form.compile_group({"path": "t:c/t:m"}, None, writing=False)
    leaf = form.compile_path("t:a", group, False)
    expression = form.compile_path("concat(t:a, '+', count(t:b))", group, False)
    top = form.compile_path("count(t:c/t:m)", None, False)
    document = (
        f'<t:r xmlns:t="{NS}"><t:c><t:m><t:a>1</t:a><t:b/></t:m><t:m><t:a>2</t:a></t:m></t:c></t:r>'
    )
    source = form.source(etree.fromstring(document.encode()))
    assert group.node.columns is not None  # the members are read by columns
    assert source.get(top) == "2"
    members = source.groups(group)
    assert [m.get(leaf) for m in members] == ["1", "2"]
    assert [m.get(expression) for m in members] == ["1+1", "2+0"]


# --- the generated code's inlined date conversion ------------------------------------------

TAINOU = load_mapping(Path(__file__).resolve().parents[1] / "mappings" / "tainou.yaml")
NOTICE = TAINOU.sections[("DelinquencyActionNotice", "inbound")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(wareki_like(), st.text(alphabet=st.sampled_from(DATE_CHARS), max_size=12)))
def test_an_inlined_date_field_reads_as_the_general_parser(text: str) -> None:
    body = f"<tn:団体コード>412091</tn:団体コード><tn:納期限>{escape(text)}</tn:納期限>"
    document = f'<tn:滞納処分通知 xmlns:tn="urn:example:tainou:1">{body}</tn:滞納処分通知>'
    result = NOTICE.translate(document.encode())
    expected = general_iso(text)
    if not text:
        assert result.output is not None and b"dueDate" not in result.output
    elif expected is None:
        assert [f.code for f in result.findings] == ["RK-MAP004"]
    else:
        assert result.output is not None
        assert f"<std:dueDate>{expected}</std:dueDate>".encode() in result.output
