"""secure_parse never raises on any bytes, and ``root is None`` exactly when it refuses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import REGISTRY
from bus.pipeline import Severity
from bus.validation.secure_parse import ParseLimits, ParseResult, secure_parse

VALID = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<!-- 住民記録 -->\n"
    '<PlatformMessage xmlns="urn:example:lg:juki:v1" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1">'
    '<Header><MessageId a="1">m-1</MessageId></Header>'
    "<Body><Shimei>山田　太郎</Shimei><Kana>ヤマダ　タロウ</Kana>"
    "<Note><![CDATA[a < b & c]]>&amp;&#x3042;</Note><?app x?><Empty/></Body>"
    "</PlatformMessage>\n"
).encode()

# Fragments that steer mutations towards the interesting branches.
TOKENS = [
    b"<!DOCTYPE r>",
    b'<!ENTITY x "y">',
    b"&x;",
    b"&#0;",
    b"&#88;",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\xfe\xff",
    b"\xff\xfe",
    b"<",
    b">",
    b"/>",
    b"</",
    b"<!--",
    b"-->",
    b"<?",
    b"?>",
    b"]]>",
    b"<![CDATA[",
    b' encoding="Shift_JIS"',
    b' encoding="UTF-16"',
    b"<a>" * 300,
    b' xmlns:xi="http://www.w3.org/2001/XInclude"',
    b"<xi:include href='/etc/passwd'/>",
    b" a=''" * 20,
    b'"',
    b"'",
    b"=",
    b"\r\n",
    b"\xe3\x81",
    b"\xed\xa0\x80",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A small valid document with a few insertions, deletions and byte flips."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["insert", "delete", "flip", "truncate"]))
        if action == "insert":
            data[position:position] = draw(st.sampled_from(TOKENS) | st.binary(max_size=8))
        elif action == "delete":
            length = draw(st.integers(min_value=1, max_value=16))
            del data[position : position + length]
        elif action == "flip" and position < len(data):
            data[position] = draw(st.integers(min_value=0, max_value=255))
        else:
            del data[position:]
    return bytes(data)


LIMITS = st.builds(
    ParseLimits,
    max_bytes=st.integers(min_value=1, max_value=20_000),
    max_depth=st.integers(min_value=1, max_value=300),
    max_attributes=st.integers(min_value=1, max_value=30),
)


def check_invariants(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    refused = any(finding.severity is Severity.ERROR for finding in result.findings)
    assert (result.root is None) == refused, result.findings
    for finding in result.findings:
        assert finding.code.startswith("RK-SEC") and finding.code in REGISTRY
        assert finding.path.startswith("/")


def test_the_seed_document_is_valid() -> None:
    result = secure_parse(VALID)
    assert result.root is not None and result.findings == ()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    check_invariants(secure_parse(data))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_documents_never_raise(data: bytes) -> None:
    check_invariants(secure_parse(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), LIMITS)
def test_mutated_documents_with_random_limits_never_raise(data: bytes, limits: ParseLimits) -> None:
    check_invariants(secure_parse(data, limits))


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b" \n", b"<?xml version='1.0'?>"])
@settings(max_examples=150, deadline=None)
@given(tail=st.binary(max_size=64))
def test_prefixed_garbage_never_raises(prefix: bytes, tail: bytes) -> None:
    check_invariants(secure_parse(prefix + tail))
