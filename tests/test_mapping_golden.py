"""The shipped mappings: golden samples, lossless round trips, the record API of the 法務局 CSV,
and the `renkei mapping` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.mapping import Mapping, load_mapping
from bus.mapping.envelope import wrap
from bus.mapping.golden import canonical, cases, run_case
from bus.mapping.tables import read_gaiji_table
from bus.validation.validator import Validator

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
SHIPPED = ("tainou", "houmu", "kokuho", "shuno")
INBOUND_ONLY = ("houmu_fixed",)  # a second layout of a system: golden samples, no way back


def shipped(name: str) -> Mapping:
    return load_mapping(MAPPINGS / f"{name}.yaml")


@pytest.mark.parametrize("name", SHIPPED + INBOUND_ONLY)
def test_golden_samples_pass_and_standard_results_validate(name: str) -> None:
    mapping = shipped(name)
    found = list(cases(mapping))
    assert found, f"no golden samples for {name}"
    validator = Validator()
    for case in found:
        result = run_case(mapping, case)
        assert result.passed, result.diff
        if case.direction == "inbound":
            report = validator.validate(
                wrap(case.expected.read_bytes().split(b"?>", 1)[-1], case.service, "412066", name)
            )
            assert report.valid, [f.as_dict() for f in report.findings]


def _alt_of_gaiji_without_character(name: str) -> dict[int, str]:
    """The system's 外字 the standard has no character for → their 代替文字: the standard
    keeps the PUA code point with its ``alt``, and an outbound section reads the ``alt`` (a
    code point means something only in the system that sent it, docs/mapping-guide.md)."""
    table = MAPPINGS / "tables" / f"{name}_gaiji.csv"
    if not table.exists():
        return {}
    return {ord(e.pua): e.alt for e in read_gaiji_table(table).values() if not e.char}


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_system_standard_system_is_lossless(name: str) -> None:
    """Every system-side golden document (inputs of inbound cases, outputs of outbound ones)
    goes to the standard and back unchanged (the normalising samples excepted: they show
    what the mapping cleans up), but for a 外字 the standard has no character for, which
    comes back as its 代替文字."""
    mapping = shipped(name)
    alt = _alt_of_gaiji_without_character(name)
    checked = 0
    for case in cases(mapping):
        system_doc = case.input if case.direction == "inbound" else case.expected
        if case.label.startswith("normalise"):
            continue
        inbound = mapping.section(case.service, "inbound")
        outbound = mapping.section(case.service, "outbound")
        assert inbound is not None and outbound is not None, case.service
        standard = inbound.translate(system_doc.read_bytes())
        assert standard.output is not None, [f.as_dict() for f in standard.findings]
        back = outbound.translate(standard.output)
        assert back.output is not None, [f.as_dict() for f in back.findings]
        suffix = system_doc.suffix
        expected = canonical(system_doc.read_bytes(), suffix).translate(alt)
        assert canonical(back.output, suffix) == expected
        checked += 1
    assert checked >= 2


def test_golden_values_checked_by_hand() -> None:
    """A few values of the generated golden outputs, checked independently of the engine."""
    tainou = (
        MAPPINGS / "golden/tainou/ResidentChangeNotice.outbound.full.expected.xml"
    ).read_text()
    assert "<tn:届出日>令和7年4月24日</tn:届出日>" in tainou  # 2025-04-24
    assert "<tn:処理日>R07.02.03</tn:処理日>" in tainou  # 2025-02-03
    assert 'tn:異動 事由="A07"' in tainou  # change reason 107 (改製, 記載)
    record = (
        MAPPINGS / "golden/kokuho/NhiEligibilityNotice.outbound.full.expected.dat"
    ).read_bytes()
    assert len(record) == 222 and record.endswith(b"\r\n")
    assert record[141:148] == b"3060820"  # 昭和6年8月20日 as GYYMMDD
    assert record[61:81].decode("cp932").rstrip("　") == "中島"


def test_houmu_csv_record_api_streams_good_records_and_reports_bad_ones() -> None:
    section = shipped("houmu").section("RegistrationNotice", "inbound")
    assert section is not None
    good = (MAPPINGS / "golden/houmu/RegistrationNotice.inbound.normalise.input.csv").read_bytes()
    header, line = good.decode().splitlines()[:2]
    bad_date = line.replace("令和六年四月八日", "令和六年二月三十日", 1)
    bad_land = line.replace(",宅地,", ",月面,", 1)
    data = "\r\n".join([header, line, bad_date, bad_land, line]).encode()
    results = list(section.translate_records(data, {"tenant": "414247"}))
    assert [r.ok for r in results] == [True, False, False, True]
    assert b"<std:localGovernmentCode>414247<" in (results[0].output or b"")
    assert [(f.code, f.path, f.item) for f in results[1].findings] == [
        ("RK-MAP004", "/record[2]/受付年月日", "receiptDate")
    ]
    assert [(f.code, f.path, f.item) for f in results[2].findings] == [
        ("RK-MAP003", "/record[3]/地目", "registeredLandCategory")
    ]
    fields = dict(zip(header.split(","), line.split(","), strict=True))
    [from_fields] = list(section.translate_fields([fields]))
    assert from_fields.output == results[0].output.replace(b"414247", b"412066")  # type: ignore[union-attr]


def test_fixed_width_and_csv_layouts_give_the_same_notice() -> None:
    """The fixed-width golden record holds the same notice as a CSV row: both layouts of the
    法務局 file translate it to the same standard document (髙 in CP932 included)."""
    fixed = shipped("houmu_fixed").section("RegistrationNotice", "inbound")
    csv = shipped("houmu").section("RegistrationNotice", "inbound")
    assert fixed is not None and csv is not None
    record = MAPPINGS / "golden/houmu_fixed/RegistrationNotice.inbound.full.input.dat"
    row = (
        "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,"
        "家屋番号,種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名\n"
        "令和8年3月1日,44995,所有権移転,令和7年2月12日売買,5616349781506,"
        "杵島郡大町町大字大町字川原,1412番4,宅地,583.93,1977番6の3,居宅,136.94,"
        "佐賀県杵島郡大町町大字大町1722番地10／佐賀県杵島郡大町町大字大町1722番地10,"
        "髙田　浩二／髙田　恵子,タカダ　コウジ／タカダ　ケイコ,1/4／3/4,"
        "佐賀県杵島郡大町町大字大町2092番地5,池田　恵美\n"
    )
    from_fixed = fixed.translate(record.read_bytes())
    from_csv = csv.translate(row.encode())
    assert from_fixed.output is not None, [f.as_dict() for f in from_fixed.findings]
    assert from_fixed.output == from_csv.output
    assert "髙田　恵子".encode() in from_fixed.output


def test_cli_check_test_apply_and_coverage(tmp_path: Path) -> None:
    runner = CliRunner()
    files = [str(MAPPINGS / f"{name}.yaml") for name in SHIPPED]
    checked = runner.invoke(app, ["mapping", "check", *files])
    assert checked.exit_code == 0, checked.output
    tested = runner.invoke(app, ["mapping", "test", files[0]])
    assert tested.exit_code == 0 and "0 failed" in tested.output, tested.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: x\nservices:\n  LevyNotice:\n    inbound: {format: nope}\n")
    refused = runner.invoke(app, ["mapping", "check", str(bad)])
    assert refused.exit_code == 2 and f"{bad}:4:" in refused.output
    csv_file = MAPPINGS / "golden/houmu/RegistrationNotice.inbound.full.input.csv"
    applied = runner.invoke(app, ["mapping", "apply", files[1], str(csv_file)])
    assert applied.exit_code == 0, applied.output
    assert "<svc:RegistrationNotice" in applied.stdout
    covered = runner.invoke(app, ["mapping", "coverage", "--json", *files])
    report = json.loads(covered.stdout)
    assert report["standard_total"] == 72 and report["extension_total"] == 42
    produced = {i["id"] for i in report["items"] if i["produced"]}
    assert {"share", "receiptNumber", "seizureDate"} <= produced
    assert report["standard_used"] == sum(
        1 for i in report["items"] if i["kind"] == "standard" and (i["produced"] or i["consumed"])
    )


def test_a_failing_golden_sample_shows_a_diff(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    shutil.copytree(MAPPINGS / "golden/houmu", tmp_path / "golden/houmu")
    shutil.copy(MAPPINGS / "houmu.yaml", tmp_path / "houmu.yaml")
    expected = tmp_path / "golden/houmu/RegistrationNotice.inbound.full.expected.xml"
    expected.write_text(expected.read_text().replace("抵当権設定", "所有権移転"))
    result = CliRunner().invoke(app, ["mapping", "test", str(tmp_path / "houmu.yaml")])
    assert result.exit_code == 1
    assert "-    <ext:registrationPurpose>所有権移転" in result.output
    assert "+    <ext:registrationPurpose>抵当権設定" in result.output
