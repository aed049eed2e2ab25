"""The validator end to end: canonical forms, XSD finding mapping, domain rules, options."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.pipeline import Message, StageName, build_pipeline
from bus.samplegen.messages import MessageSpec, build_message, serialize, to_soap
from bus.validation.stage import ValidateStage
from bus.validation.validator import AtenaCheck, Validator, ValidatorOptions
from tests.conftest import CATALOGUE_KEYS, FINDING_KEYS

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "messages"
RENKEI = str(Path(sys.executable).with_name("renkei"))


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


def resident(seed: int = 5) -> etree._Element:
    return build_message(MessageSpec("ResidentChangeNotice", seed))


def std(document: etree._Element, local: str) -> etree._Element:
    found = document.find(f".//{{{NS_STANDARD}}}{local}")
    assert found is not None
    return found


def codes(validator: Validator, document: etree._Element | bytes) -> list[str]:
    data = document if isinstance(document, bytes) else serialize(document)
    return [finding.code for finding in validator.validate(data).findings]


def test_valid_message_gives_envelope_and_service(validator: Validator) -> None:
    document = resident()
    report = validator.validate(serialize(document))
    assert report.valid and report.findings == []
    assert report.service == "ResidentChangeNotice"
    assert report.envelope is not None
    assert report.envelope.client.tenant == "412066"
    assert report.envelope.issued_at.utcoffset() is not None


def test_soap_form_is_the_same_message(validator: Validator) -> None:
    report = validator.validate(serialize(to_soap(resident())))
    assert report.valid and report.service == "ResidentChangeNotice"
    assert report.document is not None
    assert report.document.tag == f"{{{NS_ENVELOPE}}}PlatformMessage"


def test_soap_without_platform_header_is_refused(validator: Validator) -> None:
    soap = to_soap(resident())
    header = soap[0]
    header.remove(header[0])
    assert codes(validator, serialize(soap)) == ["RK-ENV002"]


def test_other_root_is_refused(validator: Validator) -> None:
    assert codes(validator, b"<Resident/>") == ["RK-ENV001"]


def test_xsd_finding_names_the_item_without_libxml2_text(validator: Validator) -> None:
    document = resident()
    std(document, "postalCode").text = "843-0022"
    [finding] = validator.validate(serialize(document)).findings
    assert finding.code == "RK-XSD001"
    assert finding.item == "postalCode" and finding.name_ja == "郵便番号"
    assert finding.path == "/PlatformMessage/ResidentChangeNotice/postalCode"
    assert finding.value_masked == "＊" * 8  # part of an address: personal, so masked
    assert "郵便番号" in finding.message_ja and "[0-9]{7}" in finding.message_en
    assert finding.detail and "facet" in finding.detail
    assert "facet" not in finding.message_ja + finding.message_en


def test_libxml2_detail_masks_a_personal_value(validator: Validator) -> None:
    """libxml2 quotes the failing value in its text: for a personal item it is masked there
    as in ``value_masked`` (a tab in a name, a letter in a 個人番号); a code stays readable."""
    document = resident()
    name, my_number = std(document, "name"), std(document, "myNumber")
    name.text = (name.text or "").replace("\u3000", "\t") + "\t"
    my_number.text = (my_number.text or "")[:-1] + "A"
    std(document, "changeReason").text = "999"
    findings = {f.item: f for f in validator.validate(serialize(document)).findings}
    for item, element in (("name", name), ("myNumber", my_number)):
        detail = findings[item].detail or ""
        assert "The value '" in detail, detail
        assert (element.text or "") not in detail and (element.text or "")[:-2] not in detail
        assert f"'{findings[item].value_masked}'" in detail
    assert "The value '999'" in (findings["changeReason"].detail or "")


def test_findings_beyond_the_cap_are_counted_in_one(validator: Validator) -> None:
    """4,000 faulty co-owners: 100 findings in full, then RK-XSD009 counting the other 3,900
    (an error: the omitted ones are), instead of 4,000 findings (a 2 MB answer)."""
    body = (SAMPLES / "RegistrationNotice" / "valid-full.xml").read_bytes()
    at = body.index(b"<ext:rightHolder>")
    holder = b"<ext:rightHolder><ext:rightHolderName>a</ext:rightHolderName>"
    holder += b"<ext:share>0/4</ext:share></ext:rightHolder>"
    report = validator.validate(body[:at] + holder * 4000 + body[at:])
    assert len(report.findings) == 101 and not report.valid
    assert {f.code for f in report.findings[:100]} == {"RK-XSD001"}
    assert report.findings[99].path.endswith("/rightHolder[100]/share")
    summary = report.findings[100]
    assert summary.code == "RK-XSD009" and summary.severity.value == "error"
    assert "3900" in summary.message_en and "100" in summary.message_ja


def test_omitted_warnings_leave_the_message_valid() -> None:
    name = "valid-warning-RK-DOM004-addressee-number-check-digit.xml"
    body = (SAMPLES / "ResidentChangeNotice" / name).read_bytes()
    assert [f.code for f in Validator().validate(body).findings] == ["RK-DOM004"]
    report = Validator(ValidatorOptions(max_findings=0)).validate(body)
    assert [f.code for f in report.findings] == ["RK-XSD009"]
    assert report.findings[0].severity.value == "warning" and report.valid


def test_personal_values_are_masked(validator: Validator) -> None:
    document = resident()
    my_number = std(document, "myNumber")
    original = my_number.text or ""
    my_number.text = original[:-1] + str((int(original[-1]) + 1) % 10)
    [finding] = validator.validate(serialize(document)).findings
    assert finding.code == "RK-DOM002" and finding.name_ja == "個人番号"
    assert finding.value_masked is not None
    assert original[:-1] not in finding.value_masked
    assert finding.value_masked.endswith(my_number.text[-1])


def test_birth_date_never_appears_in_messages(validator: Validator) -> None:
    document = resident()
    birth = std(document, "dateOfBirth")
    birth.attrib.clear()
    birth.text = "平成32年1月1日"
    [finding] = validator.validate(serialize(document)).findings
    assert finding.code == "RK-DOM010"
    assert "平成32" not in finding.message_ja + finding.message_en + (finding.value_masked or "")


def test_rules_still_run_when_the_xsd_fails(validator: Validator) -> None:
    document = resident()
    std(document, "postalCode").text = "８４３００２２"
    my_number = std(document, "myNumber")
    text = my_number.text or ""
    my_number.text = text[:-1] + str((int(text[-1]) + 1) % 10)
    found = codes(validator, document)
    assert "RK-XSD001" in found and "RK-DOM002" in found


def test_element_failing_its_xsd_is_not_checked_twice(validator: Validator) -> None:
    document = resident()
    std(document, "myNumber").text = "98320567321４"
    assert codes(validator, document) == ["RK-XSD001"]


def test_missing_required_item_mid_sequence(validator: Validator) -> None:
    document = resident()
    element = std(document, "changeReason")
    element.getparent().remove(element)
    [finding] = validator.validate(serialize(document)).findings
    assert (finding.code, finding.item, finding.name_ja) == (
        "RK-XSD004",
        "changeReason",
        "異動事由",
    )
    assert finding.path.endswith("/ResidentChangeNotice/changeReason")


def test_missing_required_item_at_the_end(validator: Validator) -> None:
    document = build_message(MessageSpec("LevyNotice", 3, full=False))
    service = document[1]
    service.remove(service[-1])
    found = validator.validate(serialize(document)).findings
    assert [f.code for f in found] == ["RK-XSD004"]


def test_unexpected_element(validator: Validator) -> None:
    document = resident()
    etree.SubElement(document[1], f"{{{NS_STANDARD}}}favouriteColour").text = "青"
    [finding] = validator.validate(serialize(document)).findings
    assert finding.code == "RK-XSD005" and finding.item == "favouriteColour"


def test_control_character_in_free_text(validator: Validator) -> None:
    document = resident()
    std(document, "name").text = "佐賀\t太郎"
    assert codes(validator, document) == ["RK-XSD001"]


def test_every_problem_is_reported_at_once(validator: Validator) -> None:
    document = resident()
    std(document, "sex").text = "X"
    std(document, "name").text = "佐賀\u3000太郎😀"
    std(document, "notificationDate").text = "2026-02-30"
    birth = std(document, "dateOfBirth")
    birth.attrib.clear()
    birth.text = "年月日不詳"
    assert sorted(codes(validator, document)) == [
        "RK-DOM011",
        "RK-DOM020",
        "RK-XSD002",
        "RK-XSD006",
    ]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (AtenaCheck.OFF, ([], True)),
        (AtenaCheck.WARN, (["RK-DOM004"], True)),
        (AtenaCheck.ERROR, (["RK-DOM004"], False)),
    ],
)
def test_atena_check_option(option: AtenaCheck, expected: tuple[list[str], bool]) -> None:
    document = resident()
    number = std(document, "addresseeNumber")
    text = number.text or ""
    number.text = text[:-1] + str((int(text[-1]) + 1) % 10)
    report = Validator(ValidatorOptions(atena_check=option)).validate(serialize(document))
    assert ([f.code for f in report.findings], report.valid) == expected


def test_header_tenant_check_digit(validator: Validator) -> None:
    document = resident()
    tenant = document.find(f".//{{{NS_ENVELOPE}}}client/{{{NS_ENVELOPE}}}tenant")
    assert tenant is not None
    tenant.text = "412067"
    [finding] = validator.validate(serialize(document)).findings
    assert finding.code == "RK-DOM001" and finding.path.endswith("/Header/client/tenant")


def test_reply_element_matches_its_service(validator: Validator) -> None:
    document = build_message(MessageSpec("AddresseeInquiryReply", 4))
    assert codes(validator, document) == []


def test_validate_stage_fills_the_message() -> None:
    pipeline = build_pipeline([ValidateStage(Validator())])
    message = pipeline.run(Message(raw=serialize(resident()), adapter="test"))
    assert not message.rejected
    assert message.service == "ResidentChangeNotice" and message.envelope is not None
    rejected = pipeline.run(Message(raw=b"<broken", adapter="test"))
    assert rejected.rejected
    assert rejected.trace == [
        StageName.RECEIVE,
        StageName.AUTHENTICATE,
        StageName.TRANSLATE_IN,
        StageName.VALIDATE,
        StageName.AUDIT,
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    report = Validator().validate(data)
    assert report.valid is False or report.document is not None


_VALID = serialize(build_message(MessageSpec("RegistrationNotice", 9)))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=8))
def test_never_raises_on_mutated_messages(position: int, patch: bytes) -> None:
    data = _VALID[:position] + patch + _VALID[position + len(patch) :]
    report = Validator().validate(data)
    assert all(f.code.startswith("RK-") for f in report.findings)


# --- the command line ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RENKEI, *args], capture_output=True, text=True, check=False)


def test_cli_exit_codes(tmp_path: Path) -> None:
    valid = SAMPLES / "ResidentChangeNotice" / "valid-full.xml"
    warning = next((SAMPLES / "ResidentChangeNotice").glob("valid-warning-*.xml"))
    invalid = next((SAMPLES / "ResidentChangeNotice").glob("invalid-*.xml"))
    malformed = tmp_path / "malformed.xml"
    malformed.write_bytes(b"<PlatformMessage")
    assert run_cli("validate", str(valid)).returncode == 0
    assert run_cli("validate", str(warning)).returncode == 0
    assert run_cli("validate", str(invalid)).returncode == 1
    assert run_cli("validate", str(malformed)).returncode == 1
    assert run_cli("validate", str(valid), str(invalid)).returncode == 1
    assert run_cli("validate", str(tmp_path / "missing.xml")).returncode == 2
    assert run_cli("validate", str(invalid), str(tmp_path)).returncode == 2


def test_cli_json_findings(tmp_path: Path) -> None:
    invalid = SAMPLES / "ResidentChangeNotice" / "invalid-RK-DOM002-my-number-check-digit.xml"
    result = run_cli("validate", "--json", str(invalid), str(tmp_path / "missing.xml"))
    payload = json.loads(result.stdout)
    assert [entry["valid"] for entry in payload] == [False, False]
    finding = payload[0]["findings"][0]
    assert list(finding)[:9] == FINDING_KEYS
    assert finding["code"] == "RK-DOM002" and finding["rule"] == "my_number"
    assert payload[1]["findings"][0]["code"] == "RK-IO001"


def test_cli_human_output_is_bilingual() -> None:
    invalid = SAMPLES / "ResidentChangeNotice" / "invalid-RK-DOM002-my-number-check-digit.xml"
    output = run_cli("validate", str(invalid)).stdout
    assert "RK-DOM002" in output and "個人番号" in output and "My Number" in output


def test_cli_atena_option() -> None:
    warning = (
        SAMPLES
        / "ResidentChangeNotice"
        / ("valid-warning-RK-DOM004-addressee-number-check-digit.xml")
    )
    assert run_cli("validate", "--atena-check", "error", str(warning)).returncode == 1
    assert run_cli("validate", "--atena-check", "off", "--json", str(warning)).returncode == 0


def test_cli_catalog_json() -> None:
    result = run_cli("catalog", "--json")
    items = json.loads(result.stdout)
    assert len(items) == 114
    assert sum(item["kind"] == "standard" for item in items) == 72
    assert sum(item["kind"] == "extension" for item in items) == 42
    assert all(list(item) == CATALOGUE_KEYS for item in items)
    by_id = {item["id"]: item for item in items}
    assert by_id["myNumber"]["rule"] == "my_number" and by_id["myNumber"]["pattern"] == "[0-9]{12}"
    assert by_id["sex"]["code_list"] == "sex"
    assert by_id["levyAmount"]["unit"] == "JPY"


def test_soap_and_platform_forms_give_the_same_findings(validator: Validator) -> None:
    document = resident()
    std(document, "changeReason").text = "999"
    plain = validator.validate(serialize(copy.deepcopy(document))).findings
    soap = validator.validate(serialize(to_soap(document))).findings
    assert [f.code for f in plain] == [f.code for f in soap] == ["RK-XSD002"]
    assert plain[0].path == soap[0].path
    assert plain[0].value_masked == "999"  # a code is not personal data: shown as sent


def test_concurrent_validations_keep_their_own_findings(validator: Validator) -> None:
    """The REST adapter validates in a thread pool: results must not bleed between threads."""
    samples = sorted(SAMPLES.glob("*/invalid-*.xml"))
    expected = {path: codes(validator, path.read_bytes()) for path in samples}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            results = pool.map(lambda p: (p, codes(validator, p.read_bytes())), samples * 4)
            for path, found in results:
                assert found == expected[path], path
