"""The error registry is the only source of codes: every code used anywhere is registered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bus.errors import CODE_PATTERN, REGISTRY, UnknownErrorCode, lookup, make_finding
from bus.pipeline import Severity

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("bus", "adapters", "tests", "samples", "docs", "mappings")


def _used_codes() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for directory in SCANNED:
        for path in (ROOT / directory).rglob("*"):
            if path.suffix not in {".py", ".md", ".xml", ".yaml", ".json", ".csv"}:
                continue
            for code in CODE_PATTERN.findall(path.read_text(encoding="utf-8", errors="replace")):
                used.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return used


def test_every_used_code_is_registered() -> None:
    unregistered = {code: where for code, where in _used_codes().items() if code not in REGISTRY}
    assert unregistered == {}


def test_unknown_code_raises() -> None:
    unknown = "RK-" + "ZZZ999"  # built at run time so the source scan above does not see it
    with pytest.raises(UnknownErrorCode):
        lookup(unknown)
    with pytest.raises(UnknownErrorCode):
        make_finding(unknown, path="/")


def test_templates_render_in_both_languages() -> None:
    for code in REGISTRY:
        finding = make_finding(
            code,
            path="/a/b",
            item="postalCode",
            name_ja="郵便番号",
            expected="E",
            actual="A",
            limit=1,
        )
        assert finding.message_ja and finding.message_en
        assert "{" not in finding.message_ja + finding.message_en
        assert re.fullmatch(r"RK-[A-Z]{2,4}[0-9]{3}", finding.code)


def test_field_names_fill_templates() -> None:
    finding = make_finding(
        "RK-XSD004", path="/PlatformMessage/X/postalCode", item="postalCode", name_ja="郵便番号"
    )
    assert "郵便番号" in finding.message_ja
    assert "postalCode" in finding.message_en
    assert finding.severity is Severity.ERROR


def test_severity_can_be_overridden() -> None:
    finding = make_finding("RK-DOM004", path="/", severity=Severity.ERROR)
    assert finding.severity is Severity.ERROR
    assert lookup("RK-DOM004").severity is Severity.WARNING


def test_errors_doc_lists_every_code() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for code, entry in REGISTRY.items():
        assert f"| `{code}` | {entry.severity.value} |" in text, code
