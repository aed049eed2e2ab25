"""An integrator's first mapping file, with the mistakes integrators really make, through the
real ``renkei mapping`` and ``renkei config check`` commands on real files: each is a coded
load error naming the file and line, saying in Japanese and English what to write instead;
never a traceback, a hang, or a mapping silently accepted that translates wrongly."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from tests.support.mappings import JSON_HEAD

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"

BASE = JSON_HEAD + '        - {to: name, from: [kojin.shi, kojin.mei], join: "　"}\n'


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def check(path: Path) -> tuple[int, str]:
    code, output = run("mapping", "check", str(path))
    return code, output.replace(str(path), path.name)


def write(tmp_path: Path, text: str, name: str = "vendor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_misspelt_item_suggests_the_nearest_catalogue_id(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("to: insuredNumber,", "to: insuredNumbr,"))
    code, output = check(path)
    assert code == 2, output
    assert "RK-MAP015 vendor.yaml:9:16" in output, output
    assert "insuredNumber（被保険者証番号）の誤りではありませんか" in output, output
    assert "Did you mean insuredNumber (被保険者証番号)?" in output, output


def test_a_japanese_item_name_is_answered_with_its_id(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("to: name,", "to: 氏名,"))
    code, output = check(path)
    assert code == 2 and "RK-MAP015 vendor.yaml:10:16" in output, output
    assert "項目 ID の name と書いてください" in output, output
    assert "'氏名' is the Japanese name of name: write the id name." in output, output


def test_an_item_id_where_a_csv_column_belongs_names_the_column(tmp_path: Path) -> None:
    text = (MAPPINGS / "houmu.yaml").read_text(encoding="utf-8")
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    path = write(tmp_path, text.replace("from: 受付番号, width", "from: receiptNumber, width"))
    code, output = check(path)
    assert code == 2 and "RK-MAP016 vendor.yaml:31:37" in output, output
    assert "did you mean 受付番号?" in output and "受付番号 ではありませんか" in output, output


@pytest.mark.parametrize("written", ["NhiEligibilityNoticeV2", "NhiEligibilityNotice_v1.1"])
def test_a_service_with_a_version_names_the_service(tmp_path: Path, written: str) -> None:
    path = write(tmp_path, BASE.replace("NhiEligibilityNotice:", f"{written}:"))
    code, output = check(path)
    assert code == 2 and "RK-MAP014 vendor.yaml:3:3" in output, output
    assert "A service name carries no version (the schema has it): write NhiEligibilityNotice." in (
        output
    ), output


def test_tab_indentation_says_to_indent_with_spaces(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    inbound:", "\tinbound:"))
    code, output = check(path)
    assert code == 2 and "RK-MAP013 vendor.yaml:4:1" in output, output
    assert "タブは使えません" in output and "Indent YAML with spaces, not tabs." in output, output


def test_a_mapping_saved_in_cp932_names_the_line_and_utf8(tmp_path: Path) -> None:
    path = tmp_path / "vendor.yaml"
    path.write_bytes(BASE.replace("from: lg,", "from: 団体,").encode("cp932"))
    code, output = check(path)
    assert code == 2 and "RK-MAP013 vendor.yaml:7:0" in output, output
    assert "Save the mapping file as UTF-8." in output, output


def test_an_empty_file_says_what_to_write(tmp_path: Path) -> None:
    code, output = check(write(tmp_path, "\n"))
    assert code == 2 and "RK-MAP018 vendor.yaml:1:1" in output, output
    assert "The file is empty: write system: and services:" in output, output


def test_a_billion_laughs_file_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    path = write(tmp_path, "\n".join(lines) + "\nsystem: kokuho\n")
    started = time.monotonic()
    code, output = check(path)
    assert time.monotonic() - started < 10, "a YAML bomb must not be expanded"
    assert code == 2 and "RK-MAP013" in output, output
    assert "Anchors (&) and aliases (*) multiply it too far" in output, output


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    entry = "        - {to: addresseeNumber, from: atena, note: " + "x" * 200 + "}\n"
    path = write(tmp_path, BASE + entry * 12_000)
    started = time.monotonic()
    code, output = check(path)
    assert time.monotonic() - started < 10
    assert code == 2 and "RK-MAP013 vendor.yaml:0:0" in output, output
    assert "A mapping file is at most 2 MB" in output, output


@pytest.mark.parametrize("written", ["Shift_JIS", "sjis", "SJIS", "shift-jis", "Windows-31J"])
def test_shift_jis_is_refused_for_cp932(tmp_path: Path, written: str) -> None:
    text = (MAPPINGS / "kokuho.yaml").read_text(encoding="utf-8")
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    path = write(tmp_path, text.replace("encoding: cp932", f"encoding: {written}"))
    code, output = check(path)
    assert code == 2 and "RK-MAP016 vendor.yaml:9:17" in output, output
    assert "Write encoding: cp932 (Windows-31J, MS932)" in output, output


@pytest.mark.parametrize("written", ["cp932", "MS932", "CP932", "utf8"])
def test_the_usual_encoding_names_load(tmp_path: Path, written: str) -> None:
    text = (MAPPINGS / "kokuho.yaml").read_text(encoding="utf-8")
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    code, output = check(write(tmp_path, text.replace("encoding: cp932", f"encoding: {written}")))
    assert code == 0, output


def test_an_unknown_csv_encoding_is_a_load_error(tmp_path: Path) -> None:
    text = (MAPPINGS / "houmu.yaml").read_text(encoding="utf-8")
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    code, output = check(write(tmp_path, text.replace("encoding: utf-8", "encoding: sjis-win")))
    assert code == 2 and "RK-MAP016 vendor.yaml:16:17" in output, output
    assert "unknown encoding 'sjis-win'" in output, output


def test_a_fallback_after_a_required_entry_is_unreachable(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "        - {to: insuredNumber, from: hihoban}\n")
    code, output = check(path)
    assert code == 2 and "RK-MAP018 vendor.yaml:11:11" in output, output
    assert "Move required: true from line 9 to the last entry for this target." in output, output


def test_required_on_the_last_entry_of_a_target_loads(tmp_path: Path) -> None:
    text = BASE.replace('from: "no", required: true}', 'from: "no"}')
    path = write(tmp_path, text + "        - {to: insuredNumber, from: hihoban, required: true}\n")
    code, output = check(path)
    assert code == 0, output


def test_a_bom_and_crlf_mapping_from_windows_loads(tmp_path: Path) -> None:
    path = tmp_path / "vendor.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode("utf-8"))
    code, output = check(path)
    assert code == 0, output


def test_config_check_names_the_mapping_problem_and_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "samples" / "config", config)
    shutil.copytree(MAPPINGS / "tables", tmp_path / "tables")
    bad = tmp_path / "tainou.yaml"
    text = (MAPPINGS / "tainou.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("to: name,", "to: 氏名,", 1), encoding="utf-8")
    systems = config / "systems.yaml"
    systems_text = systems.read_text(encoding="utf-8")
    systems.write_text(systems_text.replace("mapping: tainou.yaml", f"mapping: {bad}"), "utf-8")
    code, output = run("config", "check", str(config))
    flat = " ".join(output.split())
    assert code == 1, output
    assert "RK-MAP015" in flat and "write the id name" in flat, output
