"""A foreign document element is refused from the bytes, before libxml2 reads the document
(``secure_parse(roots=…)``, used by the Validator and the inbound adapters' screen), without
changing which code the other byte-level refusals give."""

from __future__ import annotations

import pytest

from bus.validation.secure_parse import refuse_early, root_local_name, secure_parse
from bus.validation.validator import MESSAGE_ROOT_NAMES, Validator

HUGE_ATTRIBUTE = b"<r a='" + b"A" * 2_000_000 + b"'/>"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"<PlatformMessage xmlns='urn:x'/>", "PlatformMessage"),
        (b"<soap:Envelope xmlns:soap='urn:s'>", "Envelope"),
        (b"<Envelope/>", "Envelope"),
        (b"\xef\xbb\xbf<?xml version='1.0'?>\n<!-- c --><?pi x?>\r\n\t<r>", "r"),
        (b"<a.b-c_d>", "a.b-c_d"),
        (b"<!DOCTYPE r><r/>", None),  # the DOCTYPE is secure_parse's to refuse
        ("<日本/>".encode(), None),  # not ASCII: left to the parse
        (b"<r", None),  # no end to the name
        (b"not xml", None),
        (b"", None),
    ],
)
def test_root_local_name_reads_the_first_start_tag(data: bytes, name: str | None) -> None:
    assert root_local_name(data) == name


def codes(data: bytes) -> list[str]:
    return [finding.code for finding in secure_parse(data, roots=MESSAGE_ROOT_NAMES).findings]


def test_a_foreign_root_is_refused_without_a_parse() -> None:
    # malformed after the root's start tag: a parse would have said RK-SEC006
    assert codes(b"<r><unclosed>") == ["RK-ENV001"]
    assert codes(HUGE_ATTRIBUTE) == ["RK-ENV001"]
    refusal = refuse_early(HUGE_ATTRIBUTE, roots=MESSAGE_ROOT_NAMES)
    assert refusal is not None and "(r)" in refusal.findings[0].message_en
    assert secure_parse(b"<r><unclosed>").findings[0].code == "RK-SEC006"  # roots not given


def test_the_earlier_byte_checks_keep_their_codes() -> None:
    assert codes(b"<r>\x00</r>") == ["RK-SEC006"]
    assert codes(b'<!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>') == ["RK-SEC001"]
    assert codes(b"<?xml version='1.0' encoding='UTF-16'?><r/>") == ["RK-SEC005"]
    assert codes(b"x" * (10 * 1024 * 1024 + 1)) == ["RK-SEC002"]


def test_a_message_root_name_is_parsed_and_checked_as_before() -> None:
    assert refuse_early(b"<PlatformMessage>", roots=MESSAGE_ROOT_NAMES) is None
    assert codes(b"<PlatformMessage><unclosed>") == ["RK-SEC006"]
    validator = Validator()
    # the right local name in a foreign namespace, and a non-ASCII name: refused once parsed
    foreign = (b"<PlatformMessage xmlns='urn:other'/>", "PlatformMessage")
    for body, actual in (foreign, ("<日本/>".encode(), "日本")):
        (finding,) = validator.validate(body).findings
        assert (finding.code, finding.path) == ("RK-ENV001", "/")
        assert f"({actual})" in finding.message_en


def test_the_validator_refuses_a_foreign_root_before_parsing() -> None:
    (finding,) = Validator().validate(b"<r><unclosed>").findings
    assert finding.code == "RK-ENV001"
