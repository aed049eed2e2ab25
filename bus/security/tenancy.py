"""Tenant onboarding and disabling (``renkei tenants``) as configuration edits.

Tenants live in the YAML configuration (DESIGN §6), like the systems and access rules they
are checked with: one reviewed, versioned source of truth, validated as a whole. Onboarding
writes one new file, ``tenants/<code>.yaml``, from a template; disabling sets ``enabled:
false`` on the tenant's entry in place (comments and layout kept). Both return the edited
files; the caller applies them as a new snapshot (and writes them back to a directory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from bus.config.loader import ConfigError, parse_config_files
from bus.errors import make_finding
from bus.rules.check_digits import lg_code_valid
from bus.security import SecurityRefusal

DEFAULT_TEMPLATE = Path(__file__).with_name("town_template.yaml")
TENANT_DIR = "tenants"
_PROBLEMS_SHOWN = 3


class TenancyError(SecurityRefusal):
    """A refused tenant onboarding or state change."""


@dataclass(frozen=True, slots=True)
class Onboarded:
    path: str  # the new file, relative to the configuration directory
    files: dict[str, str]  # the whole configuration with it


def _valid_code(code: str) -> None:
    if not (len(code) == 6 and code.isdigit() and lg_code_valid(code)):
        raise TenancyError(make_finding("RK-TEN001", path="/code", actual=code[:16]))


def onboard(
    files: dict[str, str], code: str, name: str, template: Path = DEFAULT_TEMPLATE
) -> Onboarded:
    """The configuration ``files`` plus ``tenants/<code>.yaml`` made from ``template``."""
    _valid_code(code)
    if code in {tenant.code for tenant in parse_config_files(files).tenants}:
        raise TenancyError(make_finding("RK-TEN002", path="/code", actual=code))
    text = Template(template.read_text(encoding="utf-8")).substitute(
        code=code, name=json.dumps(name, ensure_ascii=False)
    )
    path = f"{TENANT_DIR}/{code}.yaml"
    edited = {**files, path: text}
    try:
        parse_config_files(edited)
    except ConfigError as error:
        problems = "; ".join(error.problems[:_PROBLEMS_SHOWN])
        finding = make_finding("RK-TEN004", path="/", actual=template.name, expected=problems)
        raise TenancyError(finding) from None
    return Onboarded(path, edited)


def _tenant_entry(text: str, code: str) -> yaml.MappingNode | None:
    document = yaml.compose(text)
    if not isinstance(document, yaml.MappingNode):
        return None
    for key, value in document.value:
        if key.value != "tenants" or not isinstance(value, yaml.SequenceNode):
            continue
        for entry in value.value:
            if isinstance(entry, yaml.MappingNode) and _scalar(entry, "code") == code:
                return entry
    return None


def _scalar(entry: yaml.MappingNode, name: str) -> Any:
    return next((v.value for k, v in entry.value if k.value == name), None)


def _set_enabled_text(text: str, entry: yaml.MappingNode, enabled: bool) -> str:
    value = "true" if enabled else "false"
    for key, node in entry.value:
        if key.value == "enabled":
            return text[: node.start_mark.index] + value + text[node.end_mark.index :]
    code_key, code_value = next((k, v) for k, v in entry.value if k.value == "code")
    at = code_value.end_mark.index
    if entry.flow_style:
        insertion = f", enabled: {value}"
    else:
        insertion = "\n" + " " * code_key.start_mark.column + f"enabled: {value}"
    return text[:at] + insertion + text[at:]


def set_enabled(files: dict[str, str], code: str, enabled: bool) -> tuple[str, dict[str, str]]:
    """The file holding tenant ``code`` and the configuration with its ``enabled`` set."""
    for path in sorted(files):
        entry = _tenant_entry(files[path], code)
        if entry is not None:
            edited = {**files, path: _set_enabled_text(files[path], entry, enabled)}
            parse_config_files(edited)  # the edit keeps the configuration valid
            return path, edited
    raise TenancyError(make_finding("RK-TEN003", path="/code", actual=code[:16]))
