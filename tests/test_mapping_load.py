"""Load-time checks of mapping files: each mistake is reported at its file, line and column."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from bus.mapping import MappingError, load_mapping
from tests.support.mappings import HEAD


def problems(tmp_path: Path, extra: str, head: str = HEAD) -> list[str]:
    path = tmp_path / "vendor.yaml"
    path.write_text(head + textwrap.indent(textwrap.dedent(extra), " " * 8), encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    return [p.replace(str(path), "vendor.yaml") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("- {to: nosuchItem, from: v:x}\n", "vendor.yaml:12:16: unknown catalogue id 'nosuchItem'"),
        (
            "- {to: seizureDate, from: v:x}\n",
            "vendor.yaml:12:16: 'seizureDate' is not an item of NhiEligibilityNotice here",
        ),
        (
            "- {to: name, from: v:x, date: iso}\n",
            "vendor.yaml:12:39: wrong type: name is not a date (std:Text100)",
        ),
        (
            "- {to: dateOfBirth, from: v:x}\n",
            "vendor.yaml:12:11: wrong type: dateOfBirth is a ResidentDate: add date: resident",
        ),
        (
            "- {to: sex, const: '7'}\n",
            "vendor.yaml:12:28: wrong type: '7' is not a code of sex (sex)",
        ),
        (
            "- {to: name, from: v:x, function: no_such_function}\n",
            "vendor.yaml:12:43: unknown function 'no_such_function'",
        ),
        (
            "- {to: sex, const: '1'}\n- {to: sex, from: v:s}\n",
            "vendor.yaml:13:11: unreachable: 'sex' is always written by the entry at line 12",
        ),
        (
            "- {to: sex, from: v:s, when: {field: v:k, in: []}}\n",
            "vendor.yaml:12:38: unreachable: in: needs a non-empty list",
        ),
        (
            "- {to: name, from: 'v:x[', kana: true}\n",
            "vendor.yaml:12:28: 'v:x[' is not a valid XPath",
        ),
        ("- {to: name, from: x:y}\n", "vendor.yaml:12:28: unknown namespace prefix 'x'"),
        ("- {to: sex, from: v:s, codes: nosuch}\n", "vendor.yaml:12:39: table 'nosuch' not found"),
    ],
)
def test_each_mistake_names_file_line_and_column(tmp_path: Path, extra: str, expected: str) -> None:
    found = problems(tmp_path, extra)
    assert any(p.startswith(expected) for p in found), found


def test_a_missing_required_target_is_reported(tmp_path: Path) -> None:
    head = HEAD.replace("        - {to: insuredNumber, from: v:no}\n", "")
    found = problems(tmp_path, "", head)
    assert found == [
        "vendor.yaml:6:7: missing required target insuredNumber (NhiEligibilityNotice requires it)"
    ]


def test_unknown_service_and_yaml_syntax_errors(tmp_path: Path) -> None:
    found = problems(tmp_path, "", HEAD.replace("NhiEligibilityNotice", "NoSuchNotice"))
    assert found == ["vendor.yaml:4:3: unknown service 'NoSuchNotice'"]
    found = problems(tmp_path, "- {to: name, from: [\n")
    assert found[0].startswith("vendor.yaml:13:") and "YAML syntax error" in found[0]


def test_every_problem_is_collected(tmp_path: Path) -> None:
    found = problems(tmp_path, "- {to: nosuch, from: v:x}\n- {to: alsoNot, from: v:y}\n")
    assert [p.split(":")[1] for p in found] == ["12", "13"]


def test_configuration_requires_the_named_mapping_to_load(tmp_path: Path) -> None:
    import shutil

    from bus.config.loader import ConfigError, load_config_dir

    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[1] / "samples" / "config", config)
    systems = config / "systems.yaml"
    text = systems.read_text(encoding="utf-8")
    systems.write_text(
        text.replace("mapping: tainou.yaml", "mapping: missing.yaml"), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_dir(config)
    assert any(
        "systems.yaml:" in p and "mapping 'missing.yaml'" in p for p in caught.value.problems
    )
    systems.write_text(
        text.replace("mapping: tainou.yaml", "mapping: houmu.yaml"), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_dir(config)
    assert any("is for system 'houmu'" in p for p in caught.value.problems)


def test_an_edited_mapping_is_reloaded_within_the_recheck_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The translate stages ask for the mapping per message: the file is looked at again only
    after RECHECK_SECONDS, then an edit (new modification time) is compiled and used."""
    from bus.mapping import loader

    monkeypatch.setattr(loader, "RECHECK_SECONDS", 0.3)
    path = tmp_path / "vendor.yaml"
    path.write_text(HEAD, encoding="utf-8")
    first = loader.cached_mapping(path)
    assert loader.cached_mapping(path) is first
    path.write_text(HEAD.replace("v:no", "v:number"), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert loader.cached_mapping(path) is first  # within the window: not looked at again
    time.sleep(0.35)
    edited = loader.cached_mapping(path)
    assert edited is not first
    assert edited.section("NhiEligibilityNotice", "inbound") is not None
    path.unlink()
    time.sleep(0.35)
    with pytest.raises(MappingError, match="not found"):
        loader.cached_mapping(path)
