"""An integrator's mistakes with a new vendor's mapping file, driven through the real
``renkei mapping`` commands on real files: each is a load error at its file:line:column or a
coded finding, never a traceback, a silently ignored key or a silently dropped record."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from tests.support.mappings import JSON_HEAD

# a 住記 vendor's CSV (no header) for 住民異動通知
CSV_HEAD = """\
system: juki
services:
  ResidentChangeNotice:
    inbound:
      format: csv
      header: false
      columns: [団体, 宛名, 事由, 異動日, カナ, 続柄, 氏名]
      fields:
        - {to: localGovernmentCode, from: 団体, required: true}
        - {to: addresseeNumber, from: 宛名}
        - {to: changeReason, from: 事由}
        - {to: changeDate, from: 異動日, date: resident}
"""
ROW = "412066,000000000000019,101,R06.04.01,ﾔﾏﾀﾞ ﾀﾛｳ,01,山田 太郎\r\n"

JSON_DOC = '{"lg": "412066", "atena": "000000000000019", "no": "80981928"}'


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["mapping", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def write(tmp_path: Path, text: str, name: str = "juki.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check(tmp_path: Path, head: str, extra: str) -> tuple[int, str]:
    path = write(tmp_path, head + textwrap.indent(textwrap.dedent(extra), " " * 8))
    code, output = run("check", str(path))
    return code, output.replace(str(path), "juki.yaml")


def reported(expected: str, output: str, code: str = r"RK-MAP01[3-8]") -> bool:
    """``file:line:column: specifics`` as ``renkei mapping check`` prints a load error: a
    coded finding ``RK-MAP0nn file:line:column <日本語> / <English> (specifics)``."""
    where, _, detail = expected.partition(": ")
    pattern = rf"^  {code} {re.escape(where)} .* / .*\({re.escape(detail)}"
    return re.search(pattern, output, re.MULTILINE) is not None


# --- flags: anything but true/false was read as false, silently -----------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("- {to: nameKana, from: カナ, kana: yes}\n", "juki.yaml:13:42: kana is true or false"),
        ("- {to: name, from: 氏名, required: on}\n", "juki.yaml:13:42: required is true or false"),
        (
            "- {to: relationship, from: 続柄, codes: {values: {'01': '01'}, reverse: yes}}\n",
            "juki.yaml:13:79: reverse is true or false",
        ),
        (
            "- {to: name, from: 氏名, when: {field: カナ, exists: yes}}\n",
            "juki.yaml:13:58: exists is true or false",
        ),
    ],
)
def test_a_flag_that_is_not_true_or_false_is_a_load_error(
    tmp_path: Path, extra: str, expected: str
) -> None:
    code, output = check(tmp_path, CSV_HEAD, extra)
    assert code == 2 and reported(expected, output, "RK-MAP017"), output


def test_a_capitalised_true_is_true(tmp_path: Path) -> None:
    """``kana: True`` (as YAML 1.1 and Python write it) converts the kana; it used to be
    read as false, so half-width kana went through unconverted."""
    path = write(tmp_path, CSV_HEAD + "        - {to: nameKana, from: カナ, kana: True}\n")
    data = tmp_path / "in.csv"
    data.write_bytes(ROW.encode())
    code, output = run("apply", str(path), str(data))
    assert code == 0 and "<std:nameKana>ヤマダ　タロウ</std:nameKana>" in output, output


def test_a_header_flag_that_is_not_true_or_false_is_a_load_error(tmp_path: Path) -> None:
    code, output = check(tmp_path, CSV_HEAD.replace("header: false", "header: no"), "")
    assert code == 2 and reported("juki.yaml:5:7: header is true or false", output), output


# --- a typo in one entry must not also report its target as missing ----------------------------


def test_a_mistake_in_a_required_entry_is_not_also_a_missing_target(tmp_path: Path) -> None:
    head = CSV_HEAD.replace("from: 団体, required: true}", "from: 団体, requried: true}")
    code, output = check(tmp_path, head, "")
    assert code == 2 and "unknown key(s): requried" in output, output
    assert "missing required target localGovernmentCode" not in output, output


# --- derive: with keys of its own -------------------------------------------------------------


def test_derive_with_fields_of_its_own_is_a_load_error(tmp_path: Path) -> None:
    text = JSON_HEAD + (
        "    outbound:\n      derive: inbound\n      fields:\n        - {to: sei, from: name}\n"
    )
    code, output = run("check", str(write(tmp_path, text)))
    assert code == 2, output
    assert "derive: takes the other direction as it is" in output and "fields" in output, output


# --- operations' arguments: checked at load, not a traceback or a failure on every record ----


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("- {to: name, from: 氏名, pad: {length: x}}\n", "juki.yaml:13:37: pad is {length"),
        (
            "- {to: name, from: 氏名, pad: {length: 3, side: center}}\n",
            "juki.yaml:13:37: pad is {length",
        ),
        ("- {to: name, from: 氏名, split: {sep: '', index: 0}}\n", "juki.yaml:13:39: split is"),
        ("- {to: name, from: 氏名, split: {sep: ' ', index: -1}}\n", "juki.yaml:13:39: split is"),
        (
            "- {to: name, from: 氏名, split: {sep: ' ', index: 2, parts: 2}}\n",
            "juki.yaml:13:39: split is",
        ),
    ],
)
def test_bad_operation_arguments_are_load_errors(tmp_path: Path, extra: str, expected: str) -> None:
    code, output = check(tmp_path, CSV_HEAD, extra)
    assert code == 2 and reported(expected, output, "RK-MAP016"), output
    assert "Traceback" not in output


def test_a_codes_default_must_be_a_code_of_the_item(tmp_path: Path) -> None:
    extra = (
        "- {to: relationship, from: 続柄, "
        "codes: {values: {'1': '01'}, unknown: default, default: '77'}}\n"
    )
    code, output = check(tmp_path, CSV_HEAD, extra)
    assert code == 2 and "'77' is not a code of relationship" in output, output


# --- JSON ---------------------------------------------------------------------------------


def test_a_json_document_with_a_bom_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, JSON_HEAD, "kokuho.yaml")
    data = tmp_path / "in.json"
    data.write_bytes(b"\xef\xbb\xbf" + JSON_DOC.encode())
    code, output = run("apply", str(path), str(data))
    assert code == 0 and "<std:insuredNumber>80981928</std:insuredNumber>" in output, output


def test_bad_json_names_where(tmp_path: Path) -> None:
    path = write(tmp_path, JSON_HEAD, "kokuho.yaml")
    data = tmp_path / "in.json"
    data.write_text('{"lg": "412066",, "no": "1"}', encoding="utf-8")
    code, output = run("apply", str(path), str(data))
    assert code == 1 and "RK-MAP005" in output and "line 1 column" in output, output


def test_json_output_paths_that_clash_are_a_load_error(tmp_path: Path) -> None:
    text = (
        "system: kokuho\n"
        "services:\n"
        "  NhiEligibilityNotice:\n"
        "    outbound:\n"
        "      format: json\n"
        "      fields:\n"
        "        - {to: lg, from: localGovernmentCode}\n"
        "        - {to: lg.code, from: insuredNumber}\n"
    )
    code, output = run("check", str(write(tmp_path, text, "kokuho.yaml")))
    assert code == 2 and "kokuho.yaml:8:" in output and "'lg'" in output, output


# --- apply -----------------------------------------------------------------------------------


def test_apply_to_an_empty_file_says_there_is_no_record(tmp_path: Path) -> None:
    path = write(tmp_path, CSV_HEAD)
    data = tmp_path / "empty.csv"
    data.write_bytes(b"")
    code, output = run("apply", str(path), str(data))
    assert code == 1 and "RK-MAP005" in output and "no record" in output, output


def test_apply_in_a_direction_the_file_lacks_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, CSV_HEAD)
    data = tmp_path / "in.xml"
    data.write_text("<x/>")
    code, output = run("apply", str(path), str(data), "--direction", "outbound")
    assert code == 2 and "no outbound section" in output, output


def test_an_unclosed_quote_says_the_value_runs_over_lines(tmp_path: Path) -> None:
    path = write(tmp_path, CSV_HEAD)
    data = tmp_path / "in.csv"
    broken = ROW.replace(",101,", ',"101,')
    data.write_bytes((ROW + broken + ROW + ROW).encode())
    code, output = run("apply", str(path), str(data))
    assert code == 1 and "record 2:" in output, output
    assert "a quoted value runs over 3 line breaks" in output, output


# --- mapping test -----------------------------------------------------------------------------


def golden(tmp_path: Path, input_data: bytes, expected: bytes) -> Path:
    path = write(tmp_path, CSV_HEAD)
    folder = tmp_path / "golden" / "juki"
    folder.mkdir(parents=True)
    (folder / "ResidentChangeNotice.inbound.basic.input.csv").write_bytes(input_data)
    (folder / "ResidentChangeNotice.inbound.basic.expected.xml").write_bytes(expected)
    return path


def test_a_malformed_expected_file_fails_the_case_without_a_traceback(tmp_path: Path) -> None:
    path = golden(tmp_path, ROW.encode(), b"<svc:ResidentChangeNotice")
    code, output = run("test", str(path))
    assert code == 1 and "FAIL ResidentChangeNotice.inbound.basic.input.csv" in output, output
    assert "expected output is not well-formed" in output, output


def test_a_golden_input_with_several_records_is_refused(tmp_path: Path) -> None:
    """Only the first record was compared: the second (not even valid) passed unseen."""
    applied = golden(tmp_path, ROW.encode(), b"")
    one = tmp_path / "one.csv"
    one.write_bytes(ROW.encode())
    expected = run("apply", str(applied), str(one))[1].split("\n")[0].encode()
    folder = tmp_path / "golden" / "juki"
    (folder / "ResidentChangeNotice.inbound.basic.expected.xml").write_bytes(expected)
    assert "1 passed" in run("test", str(applied))[1]
    (folder / "ResidentChangeNotice.inbound.basic.input.csv").write_bytes(
        (ROW + "412066,x\r\n").encode()
    )
    code, output = run("test", str(applied))
    assert code == 1 and "holds 2 records" in output, output


# --- fixed width ------------------------------------------------------------------------------

FIXED_HEAD = """\
system: kokuho
services:
  NhiEligibilityNotice:
    outbound:
      format: fixed
      record_length: 30
      fields:
        - {to: {name: 団体, start: 1, bytes: 6}, from: localGovernmentCode}
        - {to: {name: 番号, start: 7, bytes: 8}, from: insuredNumber}
"""


def test_a_misspelt_key_of_a_fixed_width_path_is_a_load_error(tmp_path: Path) -> None:
    """``pading: full`` used to be ignored: the name came out padded with half-width spaces."""
    extra = "- {to: {name: 氏名, start: 15, bytes: 16, pading: full}, from: name}\n"
    code, output = check(tmp_path, FIXED_HEAD.replace("30", "40"), extra)
    assert code == 2
    assert reported("juki.yaml:10:16: unknown key(s) in a fixed-width path: pading", output)
    assert "Traceback" not in output


def test_a_record_with_the_wrong_separator_says_so(tmp_path: Path) -> None:
    text = FIXED_HEAD.replace("outbound", "inbound").replace("{to: {", "{from: {")
    text = text.replace("}, from: localGovernmentCode}", "}, to: localGovernmentCode}")
    text = text.replace("}, from: insuredNumber}", "}, to: insuredNumber}")
    text += "        - {to: addresseeNumber, const: '000000000000019'}\n"
    path = write(tmp_path, text, "kokuho.yaml")
    data = tmp_path / "in.dat"
    data.write_bytes(("412066" + "80981928".ljust(24) + "\n").encode())  # LF, not CRLF
    code, output = run("apply", str(path), str(data))
    assert code == 1 and "RK-MAP005" in output, output
    assert "b'\\n' where the separator b'\\r\\n' belongs" in output, output


def test_a_translation_finding_names_the_mapping_entry(tmp_path: Path) -> None:
    """Which line of the mapping file to look at, not only which record and column."""
    extra = "- {to: relationship, from: 続柄, codes: {values: {'1': '01'}}}\n"
    path = write(tmp_path, CSV_HEAD + textwrap.indent(extra, " " * 8))
    data = tmp_path / "in.csv"
    data.write_bytes(ROW.encode())  # 続柄 01 is not in the table
    code, output = run("apply", str(path), str(data))
    assert code == 1 and "RK-MAP003 /record[1]/続柄" in output, output
    assert f"(mapping entry at {path}:13:11)" in output, output
    # 続柄 is personal: its value is masked in the message as in value_masked
    line = next(line for line in output.splitlines() if "RK-MAP003" in line)
    assert "続柄の値（**）は変換表" in line and "the value ** is not" in line, line


def test_derive_refuses_a_join_member_it_cannot_invert(tmp_path: Path) -> None:
    """The member ``{from: kojin.mei, trim: true}`` used to be left out of the derived
    outbound section: 名 was silently not written."""
    text = JSON_HEAD + (
        '        - {to: name, from: [kojin.shi, {from: kojin.mei, trim: true}], join: "　"}\n'
        "    outbound: {derive: inbound}\n"
    )
    code, output = run("check", str(write(tmp_path, text, "kokuho.yaml")))
    assert code == 2 and "cannot derive a join member" in output, output


def test_a_problem_of_a_derived_direction_is_reported_once(tmp_path: Path) -> None:
    """``outbound: {derive: inbound}`` compiles the inbound entries again: their problems
    were listed twice."""
    text = CSV_HEAD.replace("to: addresseeNumber", "to: noSuchItem")
    code, output = run("check", str(write(tmp_path, text + "    outbound: {derive: inbound}\n")))
    assert code == 2 and output.count("RK-MAP015") == 1, output
