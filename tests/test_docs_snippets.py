"""The documentation's examples against the product: every YAML block in README.md and
docs/*.md parses; a configuration example uses only fields the configuration models have; a
mapping example loads with the mapping loader (as `renkei mapping check` would); every
setting of ``bus/settings.py`` is in the table of environment variables in
docs/configuration.md, with its real default.

A YAML block that is deliberately not loadable as it stands is marked with an HTML comment
``<!-- fragment -->`` on the line before its fence.
"""

from __future__ import annotations

import re
import shutil
import types
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from bus.config.models import HubConfig, System
from bus.mapping.loader import MappingError, load_mapping
from bus.resources import data_dir
from bus.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name != "benchmarks.md"),
    ROOT / "samples" / "config" / "README.md",
    ROOT / "mappings" / "README.md",
]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
FRAGMENT = "<!-- fragment -->"
MAPPING_KEYS = {"system", "services"}
# set by `renkei serve` for the processes it starts, never by an operator
INTERNAL_VARIABLES = {
    "RENKEI_SERVE_PARENT",
    "RENKEI_DISPATCH_PROCESSES",
    "RENKEI_TLS_CERTIFICATE_FILES",
}
# read by the test suite or CI, not by the product
TEST_ONLY_VARIABLES = {"RENKEI_REQUIRE_SERVICES", "RENKEI_SCREENSHOTS"}


def _yaml_blocks() -> list[tuple[str, str, bool]]:
    """(where, text, marked as a fragment) for every ```yaml block, list-item indent removed."""
    blocks = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            fence = FENCE.match(lines[index])
            if fence is None:
                index += 1
                continue
            end = index + 1
            while not lines[end].lstrip().startswith("```"):
                end += 1
            if fence.group(2) in {"yaml", "yml"}:
                indent = len(fence.group(1))
                text = "\n".join(line[indent:] for line in lines[index + 1 : end])
                fragment = index > 0 and lines[index - 1].strip() == FRAGMENT
                blocks.append((f"{path.relative_to(ROOT)}:{index + 1}", text, fragment))
            index = end + 1
    return blocks


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly, in a tuple/list, or optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in {Union, types.UnionType, tuple, list}:
        for argument in get_args(annotation):
            if (model := _model_of(argument)) is not None:
                return model
    return None


def _unknown_keys(value: Any, model: type[BaseModel], where: str) -> list[str]:
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown_keys(item, model, where)]
    if not isinstance(value, dict):
        return []
    names = {field.alias or name: field for name, field in model.model_fields.items()}
    problems = []
    for key, item in value.items():
        field = names.get(key)
        if field is None:
            problems.append(f"{where}: {model.__name__} has no field {key!r}")
        elif (inner := _model_of(field.annotation)) is not None:
            problems += _unknown_keys(item, inner, f"{where}: {key}")
    return problems


def _config_problems(where: str, data: Any) -> list[str]:
    if isinstance(data, list):  # `- id: …` entries of systems.yaml shown alone
        return _unknown_keys(data, System, where)
    if set(data) <= set(HubConfig.model_fields):
        return _unknown_keys(data, HubConfig, where)
    if set(data) <= set(System.model_fields):  # part of one system's entry
        return _unknown_keys(data, System, where)
    return [f"{where}: neither a configuration nor a mapping example (mark it {FRAGMENT})"]


def test_the_docs_have_yaml_examples() -> None:
    blocks = _yaml_blocks()
    assert len(blocks) >= 10
    assert any(text.lstrip().startswith("system:") for _, text, _ in blocks)


def test_every_yaml_example_parses() -> None:
    broken = {}
    for where, text, _ in _yaml_blocks():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as error:
            broken[where] = str(error)
    assert broken == {}


def test_configuration_examples_use_only_real_fields() -> None:
    problems = []
    for where, text, fragment in _yaml_blocks():
        data = yaml.safe_load(text)
        if fragment or (isinstance(data, dict) and set(data) >= MAPPING_KEYS):
            continue
        problems += _config_problems(where, data)
    assert problems == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("systems:\n  - id: x\n    colour: red\n", "System has no field 'colour'"),
        ("- id: x\n  file_linkage: {inbound: [{pathh: /x}]}\n", "no field 'pathh'"),
        ("routes:\n  - service: X\n    subscribers: [{system: a, whenn: []}]\n", "'whenn'"),
    ],
)
def test_a_wrong_configuration_field_is_caught(text: str, expected: str) -> None:
    assert any(expected in p for p in _config_problems("x", yaml.safe_load(text)))


def test_every_mapping_example_loads(tmp_path: Path) -> None:
    shutil.copytree(data_dir("mappings") / "tables", tmp_path / "tables")
    examples = 0
    failures = {}
    for number, (where, text, fragment) in enumerate(_yaml_blocks()):
        data = yaml.safe_load(text)
        if fragment or not (isinstance(data, dict) and set(data) >= MAPPING_KEYS):
            continue
        examples += 1
        path = tmp_path / f"example{number}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_mapping(path)
        except MappingError as error:
            failures[where] = [f"{f.code} {f.path} {f.detail}" for f in error.findings]
    assert examples >= 2
    assert failures == {}


def _variable_table() -> dict[str, str]:
    """docs/configuration.md's table: variable → the default column as written."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(RENKEI_[A-Z0-9_]+)` \| ([^|]+?) \|", text, flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def _written(default: Any) -> str:
    if default is None:
        return "—"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, Enum):
        return f"`{default.value}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def test_every_setting_is_documented_with_its_default() -> None:
    table = _variable_table()
    wrong = {}
    for name, field in Settings.model_fields.items():
        variable = (ENV_PREFIX + name).upper()
        expected = _written(field.default)
        if table.get(variable) != expected:
            wrong[variable] = (table.get(variable), expected)
    assert wrong == {}


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for directory in ("bus", "adapters")
        for path in (ROOT / directory).rglob("*.py")
    )
    read = set(re.findall(r"\bRENKEI_[A-Z][A-Z0-9_]*\b", code)) - INTERNAL_VARIABLES
    table = _variable_table()
    assert read - set(table) == set()
    known = read | {(ENV_PREFIX + name).upper() for name in Settings.model_fields}
    assert set(table) - known - TEST_ONLY_VARIABLES == set()


def test_every_code_fence_stands_on_its_own_line() -> None:
    """A fence with text after it (```` ``` A missing header…````) leaves the block open and
    swallows the prose that follows when the page is rendered."""
    loose = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in DOCS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "```" in line and FENCE.match(line) is None
    ]
    assert loose == []


def test_architecture_names_every_error_area() -> None:
    from bus.errors import REGISTRY

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    areas = {code[3:-3] for code in REGISTRY}
    assert {area for area in areas if not re.search(rf"\b{area}\s+\(", text)} == set()
