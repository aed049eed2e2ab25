"""A CSV layout's ``line_breaks: false``: each line is one record, so a quote left open
spoils only its own line instead of taking in the rest of the file (the RFC 4180 default)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from bus.cli import app
from bus.folders.watcher import FolderWatcher
from bus.hub import Hub
from bus.settings import Settings
from tests.support.folders import ROOT, drop, folder_config, report_of

LAYOUT = """\
system: juki
services:
  ResidentChangeNotice:
    inbound:
      format: csv
      header: false
      line_breaks: {flag}
      columns: [団体, 宛名, 事由, 異動日]
      fields:
        - {{to: localGovernmentCode, from: 団体, required: true}}
        - {{to: addresseeNumber, from: 宛名}}
        - {{to: changeReason, from: 事由}}
        - {{to: changeDate, from: 異動日, date: resident}}
"""
ROW = "412066,000000000000019,101,R06.04.01\r\n"
OPEN_QUOTE = '412066,000000000000019,"101,R06.04.01\r\n'


def apply(tmp_path: Path, flag: str, data: str) -> tuple[int, str]:
    layout = tmp_path / "juki.yaml"
    layout.write_text(LAYOUT.format(flag=flag), encoding="utf-8")
    source = tmp_path / "in.csv"
    source.write_text(data, encoding="utf-8", newline="")
    result = CliRunner().invoke(app, ["mapping", "apply", str(layout), str(source)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_an_open_quote_spoils_only_its_own_line(tmp_path: Path) -> None:
    code, output = apply(tmp_path, "false", ROW + OPEN_QUOTE + ROW + ROW)
    assert code == 1
    assert output.count("<svc:ResidentChangeNotice") == 3, output  # records 1, 3, 4
    assert "record 2:\n  RK-MAP005 /record[2]" in output, output
    assert 'a quoted value is not closed (a closing " missing?)' in output, output
    assert "record 3:" not in output and "record 4:" not in output, output


def test_by_default_the_open_quote_takes_in_the_rest_and_says_how_to_read_lines_alone(
    tmp_path: Path,
) -> None:
    code, output = apply(tmp_path, "true", ROW + OPEN_QUOTE + ROW + ROW)
    assert code == 1
    assert output.count("<svc:ResidentChangeNotice") == 1, output
    assert "a quoted value runs over 3 line breaks" in output, output
    assert "line_breaks: false in the layout reads each line alone" in output, output


def test_without_line_breaks_quoted_values_on_their_line_are_read_as_before(
    tmp_path: Path,
) -> None:
    quoted = '"412066","000000000000019","101",R06.04.01\r\n'
    code, output = apply(tmp_path, "false", ROW + quoted)
    assert code == 0, output
    assert output.count("<std:changeReason>101</std:changeReason>") == 2, output


def test_line_breaks_takes_only_true_or_false(tmp_path: Path) -> None:
    code, output = apply(tmp_path, "maybe", ROW)
    assert code == 2
    assert "RK-MAP017" in output and "line_breaks is true or false, not 'maybe'" in output, output


def test_a_hot_folder_report_gives_the_open_quotes_line_and_stores_the_others(
    tmp_path: Path,
) -> None:
    """The shipped 法務局 layout with ``line_breaks: false``: record 1's 所在 opens a quote on
    line 3 (after the header record and the column names); records 2 and 3 are stored."""
    layout = yaml.safe_load((ROOT / "mappings" / "houmu.yaml").read_text(encoding="utf-8"))
    layout["services"]["RegistrationNotice"]["inbound"]["line_breaks"] = "false"
    mapping = tmp_path / "mappings" / "houmu-lines.yaml"  # its tables beside it, as shipped
    shutil.copytree(ROOT / "mappings" / "tables", mapping.parent / "tables")
    mapping.write_text(yaml.safe_dump(layout, allow_unicode=True), encoding="utf-8")
    inbox = tmp_path / "in" / "houmu"
    folder = {"path": str(inbox), "service": "RegistrationNotice", "tenant": "412066"}
    config = folder_config(tmp_path, folder, system="houmu", mapping=str(mapping))
    hub = Hub.open(Settings(data_dir=tmp_path / "data", config_dir=config))
    try:
        FolderWatcher(hub).poll_once()
        golden = (
            ROOT / "mappings" / "golden" / "houmu" / "RegistrationNotice.inbound.full.input.csv"
        )
        columns, line = golden.read_text(encoding="utf-8").splitlines()[:2]

        def numbered(number: int, place: str | None = None) -> str:
            fields = line.split(",")
            fields[1] = f"900{number:02d}"
            if place is not None:
                fields[5] = place
            return ",".join(fields)

        lines = ["H,1,20260401", columns, numbered(1, '"杵島郡大町町大字大町'), numbered(2)]
        lines += [numbered(3), "T,3"]
        drop(inbox, "TOUKI.csv", "\r\n".join(lines).encode() + b"\r\n")
        (moved,) = FolderWatcher(hub).poll_once()
        report = report_of(moved)
        assert moved.parent.name == "done", report
        assert [(e["record"], e["line"]) for e in report["errors"]] == [(1, 3)]
        assert report["records"] == 3 and report["stored"] == 2
    finally:
        hub.close()
