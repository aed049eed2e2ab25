"""Property tests: whatever the input, the engine never raises; every problem is a registered,
coded finding that names the record and the field."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import REGISTRY
from bus.mapping import Translation, load_mapping
from bus.mapping.standard import escape

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
TAINOU = load_mapping(MAPPINGS / "tainou.yaml")
HOUMU = load_mapping(MAPPINGS / "houmu.yaml")
KOKUHO = load_mapping(MAPPINGS / "kokuho.yaml")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text a vendor might send: kana of both widths, kanji, digits, era names, separators, PUA.
texts = st.text(
    alphabet=st.sampled_from(
        list("0123456789０１２３ｱｶﾞﾊﾟあア山田令和平成昭年月日/.-／, 　\ue000\ue001\ue009R")
    ),
    max_size=24,
)


def assert_coded(result: Translation) -> None:
    for finding in result.findings:
        assert finding.code in REGISTRY
        assert finding.path.startswith(f"/record[{result.number}]")
    if result.output is None:
        assert result.findings
        assert any(f.severity.value == "error" for f in result.findings)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_any_section(data: bytes) -> None:
    for mapping in (TAINOU, HOUMU, KOKUHO):
        for section in mapping.sections.values():
            result = section.translate(data)
            assert_coded(result)
            assert result.output is None or isinstance(result.output, bytes)


@FAST
@given(st.lists(texts, min_size=18, max_size=18))
def test_csv_records_with_any_field_values(values: list[str]) -> None:
    section = HOUMU.sections[("RegistrationNotice", "inbound")]
    [result] = list(section.translate_fields([values]))
    assert_coded(result)
    for finding in result.findings:
        column = finding.path.removeprefix("/record[1]/")
        assert column in section.format.columns  # type: ignore[attr-defined]
        assert finding.item is not None and finding.name_ja


@FAST
@given(st.lists(texts, min_size=6, max_size=6))
def test_tainou_documents_with_any_field_values(values: list[str]) -> None:
    names = ["団体コード", "宛名番号", "税目", "納期限", "氏名", "処理日"]
    body = "".join(f"<tn:{n}>{escape(v)}</tn:{n}>" for n, v in zip(names, values, strict=True))
    document = f'<tn:滞納処分通知 xmlns:tn="urn:example:tainou:1">{body}</tn:滞納処分通知>'
    result = TAINOU.sections[("DelinquencyActionNotice", "inbound")].translate(document.encode())
    assert_coded(result)
    assert all(f.item for f in result.findings)


@FAST
@given(st.lists(texts, min_size=4, max_size=4))
def test_outbound_fixed_width_with_any_standard_values(values: list[str]) -> None:
    name, kana, birth, acquired = (escape(v) for v in values)
    document = (
        '<svc:NhiEligibilityNotice xmlns:svc="urn:renkei:platform:service:1" '
        'xmlns:std="urn:renkei:platform:standard:1">'
        "<std:localGovernmentCode>412066</std:localGovernmentCode>"
        f"<std:name>{name}</std:name><std:nameKana>{kana}</std:nameKana>"
        f'<std:dateOfBirth iso="{birth}">{birth}</std:dateOfBirth>'
        f"<std:qualificationAcquiredDate>{acquired}</std:qualificationAcquiredDate>"
        "</svc:NhiEligibilityNotice>"
    )
    result = KOKUHO.sections[("NhiEligibilityNotice", "outbound")].translate(document.encode())
    assert_coded(result)
    if result.output is not None:
        assert len(result.output) == 222
