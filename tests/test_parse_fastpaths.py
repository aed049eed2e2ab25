"""Fast paths against their general forms: the CSV group split reading the group's columns in
one call; the standard writer encoding only the values (its tags are bytes literals); the parse
of a body the hub stored itself, without the checks for untrusted bytes."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from bus.mapping.formats.csv import CsvRecord, SplitGroup
from bus.mapping.standard import read_service, write_service
from bus.mapping.values import DictRecord
from bus.validation.secure_parse import parse_stored, secure_parse
from bus.validation.validator import Validator
from tests.support.hub_server import SAMPLES

MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CELL = st.text(alphabet=st.sampled_from(list("ab／/ 令")), max_size=5)
# a row built from a mapping: text nearly always, sometimes None
VALUE = st.one_of(CELL, CELL, CELL, st.none())
COLUMNS = ["x", "y", "z", "w"]


@MANY
@given(
    st.sampled_from(["／", "/"]),
    st.integers(1, 4),
    st.dictionaries(st.sampled_from(COLUMNS), VALUE, max_size=4),
)
def test_groups_read_at_once_are_the_groups_read_one_by_one(
    separator: str, width: int, row: dict[str, Any]
) -> None:
    key = SplitGroup(separator, COLUMNS[:width])
    record = CsvRecord(row)
    assert record.groups(key) == record._groups_read_one_by_one(key)


def test_a_column_added_after_a_read_is_read_too() -> None:
    record = CsvRecord({"x": "a", "y": "b", "z": "c／d"})
    assert record.groups(SplitGroup("／", ["x"])) == [{"x": "a"}]  # one column: a tuple of one
    key = SplitGroup("／", ["x", "y"])
    assert record.groups(key) == [{"x": "a", "y": "b"}]
    key.columns.append("z")  # compiling adds the group's columns as it meets them
    assert record.groups(key) == [{"x": "a", "y": "b", "z": "c"}, {"x": "", "y": "", "z": "d"}]


SERVICE = "RegistrationNotice"
WRITTEN = st.text(alphabet=st.sampled_from(list("a1 &<令〓髙")), max_size=5)


@MANY
@given(
    st.dictionaries(st.sampled_from(["receiptNumber", "lotNumber", "propertyLocation"]), WRITTEN)
)
def test_the_service_bytes_read_back_as_the_values(data: dict[str, str]) -> None:
    """Tags as bytes, values encoded one by one: UTF-8 XML holding each value, escaped."""
    written = write_service(SERVICE, DictRecord({"localGovernmentCode": "412066", **data}))
    element = etree.fromstring(written)
    assert read_service(element).data == {"localGovernmentCode": "412066", **data}


def test_a_stored_body_parses_as_the_secure_parse_reads_it() -> None:
    validator = Validator()
    stored = [
        etree.tostring(report.document)
        for path in sorted(SAMPLES.glob("*/valid-*.xml"))
        if (report := validator.validate(path.read_bytes())).document is not None
    ]
    assert len(stored) > 10
    for body in stored:
        fast, checked = parse_stored(body), secure_parse(body)
        assert fast.findings == checked.findings == ()
        assert fast.root is not None and checked.root is not None
        assert etree.tostring(fast.root, method="c14n") == etree.tostring(
            checked.root, method="c14n"
        )


def test_a_damaged_stored_body_gets_the_secure_parse_findings() -> None:
    for damaged in (b"<env:PlatformMessage xmlns:env='urn:x'><a>", b"", b"\xff\xfe<a/>"):
        result = parse_stored(damaged)
        assert result.root is None and result.findings
        assert result.findings == secure_parse(damaged).findings
