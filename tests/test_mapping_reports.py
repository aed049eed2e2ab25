"""How mapping problems are reported to an integrator, through the real ``renkei mapping``
and ``renkei config`` commands on real files: load errors are coded findings (ja/en, with
file:line:column), an office's fixed-width file may end in an extra CRLF or an EOF byte, an
unreadable date shows its (masked) value, a JSON path at an object is a finding, and a
golden file with a misspelt name is reported rather than skipped."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.catalogue import load_catalogue
from bus.cli import app
from bus.errors import REGISTRY
from bus.mapping import MappingError, load_mapping
from tests.support.mappings import HEAD, JSON_HEAD

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
KOKUHO_IN = MAPPINGS / "golden" / "kokuho" / "NhiEligibilityNotice.inbound.full.input.dat"
KOKUHO_OUT = MAPPINGS / "golden" / "kokuho" / "NhiEligibilityNotice.outbound.full.input.xml"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def vendor(tmp_path: Path, extra: str, head: str = HEAD) -> Path:
    path = tmp_path / "vendor.yaml"
    path.write_text(head + textwrap.indent(textwrap.dedent(extra), " " * 8), encoding="utf-8")
    return path


# --- 1. load errors are coded findings -------------------------------------------------------


def test_check_prints_a_load_error_as_a_coded_finding(tmp_path: Path) -> None:
    path = vendor(tmp_path, "- {to: nosuchItem, from: v:x}\n")
    code, output = run("mapping", "check", str(path))
    output = output.replace(str(path), "vendor.yaml")
    assert code == 2, output
    line = next(line for line in output.splitlines() if "RK-MAP015" in line)
    assert "vendor.yaml:12:16" in line, output
    assert "カタログ" in line and "catalogue" in line, output  # Japanese and English
    assert "unknown catalogue id 'nosuchItem'" in line, output  # the detail is kept


def test_a_load_error_about_an_item_names_it_in_japanese(tmp_path: Path) -> None:
    path = vendor(tmp_path, "- {to: seizureDate, from: v:x}\n")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    [finding] = caught.value.findings
    assert finding.code == "RK-MAP015"
    assert finding.path == f"{path}:12:16"
    assert finding.item == "seizureDate" and finding.name_ja == "差押日"
    assert "差押日" in finding.message_ja and "seizureDate" in finding.message_en
    assert finding.detail == "'seizureDate' is not an item of NhiEligibilityNotice here"


@pytest.mark.parametrize(
    ("extra", "head_change", "code"),
    [
        ("- {to: name, from: [\n", None, "RK-MAP013"),  # YAML syntax
        ("- {to: name, from: v:x, tirm: true}\n", None, "RK-MAP014"),  # unknown key
        ("", ("NhiEligibilityNotice", "NoSuchNotice"), "RK-MAP014"),  # unknown service
        ("- {to: name, from: v:x}\n", ("system: vendor", "system: vendor\nsytem: x"), "RK-MAP014"),
        ("- {to: nosuchItem, from: v:x}\n", None, "RK-MAP015"),  # unknown catalogue item
        ("- {to: name, from: v:x, split: {sep: ''}}\n", None, "RK-MAP016"),  # bad argument
        ("- {to: sex, from: v:s, codes: nosuch}\n", None, "RK-MAP016"),  # missing table
        ("- {to: name, from: 'v:x['}\n", None, "RK-MAP016"),  # bad XPath
        ("- {to: name, from: v:x, date: iso}\n", None, "RK-MAP017"),  # wrong type
        ("- {to: nameKana, from: v:k, kana: yes}\n", None, "RK-MAP017"),  # yes/no key
        ("- {to: sex, const: '1'}\n- {to: sex, from: v:s}\n", None, "RK-MAP018"),  # unreachable
        ("- {from: v:x}\n", None, "RK-MAP018"),  # an entry needs to:
    ],
)
def test_every_kind_of_load_error_has_its_code(
    tmp_path: Path, extra: str, head_change: tuple[str, str] | None, code: str
) -> None:
    head = HEAD.replace(*head_change) if head_change else HEAD
    with pytest.raises(MappingError) as caught:
        load_mapping(vendor(tmp_path, extra, head))
    codes = [f.code for f in caught.value.findings]
    assert code in codes, caught.value.problems
    for finding in caught.value.findings:
        assert finding.code in REGISTRY and finding.message_ja and finding.message_en
        assert finding.path.startswith(str(tmp_path / "vendor.yaml") + ":")


def test_a_missing_required_target_names_the_item(tmp_path: Path) -> None:
    head = HEAD.replace("        - {to: insuredNumber, from: v:no}\n", "")
    with pytest.raises(MappingError) as caught:
        load_mapping(vendor(tmp_path, "", head))
    [finding] = caught.value.findings
    name = load_catalogue().by_id["insuredNumber"].name_ja
    assert (finding.code, finding.item, finding.name_ja) == ("RK-MAP018", "insuredNumber", name)
    assert name in finding.message_ja


def test_a_missing_file_is_a_coded_finding(tmp_path: Path) -> None:
    code, output = run("mapping", "check", str(tmp_path / "nosuch.yaml"))
    assert code == 2 and "RK-MAP013" in output, output


def test_check_json_carries_the_codes(tmp_path: Path) -> None:
    bad = vendor(tmp_path, "- {to: nosuchItem, from: v:x}\n")
    code, output = run("mapping", "check", "--json", str(bad), str(MAPPINGS / "kokuho.yaml"))
    assert code == 2, output
    report = json.loads(output)
    assert [entry["ok"] for entry in report] == [False, True]
    [finding] = report[0]["findings"]
    assert finding["code"] == "RK-MAP015" and finding["path"] == f"{bad}:12:16"
    assert finding["detail"] == "unknown catalogue id 'nosuchItem'"
    assert report[1]["system"] == "kokuho" and report[1]["findings"] == []


def test_config_check_reports_a_bad_mapping_with_its_code(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "samples" / "config", config)
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    bad = tmp_path / "tainou.yaml"
    bad.write_text(
        (MAPPINGS / "tainou.yaml").read_text(encoding="utf-8").replace("to: name,", "to: nom,", 1),
        encoding="utf-8",
    )
    systems = config / "systems.yaml"
    text = systems.read_text(encoding="utf-8")
    systems.write_text(text.replace("mapping: tainou.yaml", f"mapping: {bad}"), encoding="utf-8")
    code, output = run("config", "check", str(config))
    assert code == 1, output
    line = next(line for line in " ".join(output.split("\n  ")).splitlines() if "RK-MAP" in line)
    assert "RK-MAP015" in line and "unknown catalogue id 'nom'" in line, output


# --- 2. a fixed-width file ending in an extra CRLF or an EOF byte ------------------------------


@pytest.mark.parametrize("tail", [b"\r\n", b"\x1a", b"\r\n\x1a"])
def test_a_fixed_width_file_may_end_in_an_extra_separator_or_eof(
    tmp_path: Path, tail: bytes
) -> None:
    data = tmp_path / "k2.dat"
    data.write_bytes(KOKUHO_IN.read_bytes() + tail)
    code, output = run("mapping", "apply", str(MAPPINGS / "kokuho.yaml"), str(data))
    assert code == 0, output
    assert "RK-MAP005" not in output and "record 2" not in output, output


@pytest.mark.parametrize("tail", [b"\r\n\r\n", b"\x1a\x1a", b"\x1a\r\n", b" \r\n"])
def test_nothing_more_than_that_is_tolerated(tmp_path: Path, tail: bytes) -> None:
    data = tmp_path / "k3.dat"
    data.write_bytes(KOKUHO_IN.read_bytes() + tail)
    code, output = run("mapping", "apply", str(MAPPINGS / "kokuho.yaml"), str(data))
    assert code == 1 and "RK-MAP005" in output, output


# --- 3. an unreadable date shows its value, masked when personal --------------------------------


def test_an_unreadable_date_shows_its_value(tmp_path: Path) -> None:
    data = tmp_path / "k.dat"
    record = KOKUHO_IN.read_bytes()
    data.write_bytes(record[:150] + b"20261345" + record[158:])  # 資格取得日: month 13
    code, output = run("mapping", "apply", str(MAPPINGS / "kokuho.yaml"), str(data))
    assert code == 1, output
    line = next(line for line in output.splitlines() if "RK-MAP004" in line)
    assert "20261345" in line, output
    # the path names the field (a fixed-width one by its name, not its layout's dict)
    assert "/record[1]/資格取得日 " in line and "'start'" not in line, line


def test_an_unreadable_personal_date_is_masked(tmp_path: Path) -> None:
    message = tmp_path / "m.xml"
    text = KOKUHO_OUT.read_text(encoding="utf-8")
    assert 'iso="1931-08-20"' in text
    message.write_text(text.replace('iso="1931-08-20"', 'iso="1850-08-20"'), encoding="utf-8")
    code, output = run(
        "mapping", "apply", str(MAPPINGS / "kokuho.yaml"), str(message), "--direction", "outbound"
    )
    assert code == 1, output
    line = next(line for line in output.splitlines() if "RK-MAP004" in line)
    assert "生年月日" in line and "＊＊＊＊＊＊＊＊＊＊" in line, output  # 1850-08-20, masked
    assert "1850" not in output, output


# --- 4. a JSON path at an object or array ----------------------------------------------------


@pytest.mark.parametrize(
    ("atena", "kind"), [({"bangou": "000000000000019"}, "object"), (["19"], "array")]
)
def test_a_json_path_at_an_object_or_array_is_a_finding(
    tmp_path: Path, atena: object, kind: str
) -> None:
    path = tmp_path / "kokuho.yaml"
    path.write_text(JSON_HEAD, encoding="utf-8")
    data = tmp_path / "in.json"
    data.write_text(json.dumps({"lg": "412066", "atena": atena, "no": "80981928"}), "utf-8")
    code, output = run("mapping", "apply", str(path), str(data))
    assert code == 1, output
    line = next(line for line in output.splitlines() if "RK-MAP019" in line)
    assert "/record[1]/atena" in line and kind in line, output


# --- 5. a golden file whose name matches no pattern ------------------------------------------


def test_a_misnamed_golden_file_is_reported(tmp_path: Path) -> None:
    shutil.copy(MAPPINGS / "kokuho.yaml", tmp_path / "kokuho.yaml")
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    golden = tmp_path / "golden" / "kokuho"
    shutil.copytree(MAPPINGS / "golden" / "kokuho", golden)
    code, output = run("mapping", "test", str(tmp_path / "kokuho.yaml"))
    assert code == 0 and "2 passed, 0 failed" in output, output
    (golden / "NhiEligibilityNotice.inbound.full.input.dat").rename(
        golden / "NhiEligibilityNotice.inbond.full.input.dat"
    )
    code, output = run("mapping", "test", str(tmp_path / "kokuho.yaml"))
    assert code == 1, output
    assert "NhiEligibilityNotice.inbond.full.input.dat" in output, output
    # the expected file it was meant for is left without an input: also said
    assert "NhiEligibilityNotice.inbound.full.expected.xml" in output, output


@pytest.mark.parametrize(
    ("header", "trailer", "tail", "count"),
    [
        (None, None, b"\r\n", 1),  # no frame: the records alone, then the office's extras
        (None, None, b"\x1a", 1),
        ("H", None, b"\r\n\x1a", 1),
        (None, None, b"\r\n\r\n", 2),  # more than one empty line: a record that is wrong
    ],
)
def test_a_hot_folder_reads_the_same_file_ends(
    header: str | None, trailer: str | None, tail: bytes, count: int
) -> None:
    """The hot folders read a fixed-width file with the same reader (bus/folders/inbound.py
    → FixedFormat.records): the tolerated ends hold no record there either."""
    from bus.config.models import FileRecords, InboundFolder
    from bus.folders.inbound import read_records

    section = load_mapping(MAPPINGS / "kokuho.yaml").section("NhiEligibilityNotice", "inbound")
    assert section is not None
    folder = InboundFolder(
        path="in",
        service="NhiEligibilityNotice",
        tenant="412066",
        encoding="cp932",
        records=FileRecords(header=header, trailer=trailer),
    )
    head = b"H 1 20260401\r\n" if header else b""
    records = read_records(head + KOKUHO_IN.read_bytes() + tail, section, folder)
    translations = list(records.translations)
    assert records.count == count == len(translations)
    assert translations[0].ok
    if count == 2:
        assert [f.code for f in translations[1].findings] == ["RK-MAP005"]
