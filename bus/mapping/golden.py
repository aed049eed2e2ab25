"""Golden samples (``mappings/golden/<mapping file name>/``): an input and its expected output
per case, compared after canonicalisation, with a unified diff on failure.

A case is two files, ``<Service>.<inbound|outbound>.<label>.input.<ext>`` and the same name
with ``expected`` (and the output's extension). XML is compared in C14N 2.0 form (whitespace
between elements ignored), JSON as data, CSV and fixed-width records byte for byte.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from bus.mapping.loader import Mapping
from bus.mapping.section import Direction, Translation
from bus.pipeline import Finding


@dataclass(frozen=True, slots=True)
class GoldenCase:
    service: str
    direction: Direction
    label: str
    input: Path
    expected: Path


@dataclass(slots=True)
class GoldenResult:
    case: GoldenCase
    passed: bool
    diff: str
    findings: list[Finding]


def cases(mapping: Mapping) -> Iterator[GoldenCase]:
    directory = mapping.golden_dir
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        parts = path.name.split(".")
        if len(parts) < 5 or parts[-2] != "input" or parts[1] not in ("inbound", "outbound"):
            continue
        stem = ".".join(parts[:-2])
        found = sorted(directory.glob(f"{stem}.expected.*"))
        expected = found[0] if found else path.with_name(f"{stem}.expected{path.suffix}")
        direction: Direction = "inbound" if parts[1] == "inbound" else "outbound"
        yield GoldenCase(parts[0], direction, ".".join(parts[2:-2]), path, expected)


def stray_files(mapping: Mapping) -> list[Path]:
    """Files of the golden folder that belong to no case: a name matching neither pattern
    (``X.inbond.a.input.csv``), or an expected output whose input is missing or misnamed.
    Hidden files and a README are not samples."""
    directory = mapping.golden_dir
    if not directory.is_dir():
        return []
    used = {path for case in cases(mapping) for path in (case.input, case.expected)}
    return [
        path
        for path in sorted(directory.iterdir())
        if path not in used
        and not path.name.startswith(".")
        and not path.name.upper().startswith("README")
    ]


def canonical(data: bytes, suffix: str) -> str:
    """Text for comparison: C14N 2.0 XML, one element per line; sorted JSON; else as is."""
    if suffix == ".xml":
        parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
        root = etree.fromstring(data, parser)
        text = etree.canonicalize(etree.tostring(root, encoding="unicode"), strip_text=True)
        canonical_root = etree.fromstring(text.encode(), parser)
        namespaces = {
            str(prefix): str(uri)
            for element in canonical_root.iter(tag=etree.Element)
            for prefix, uri in element.nsmap.items()
            if prefix
        }
        etree.cleanup_namespaces(canonical_root, top_nsmap=namespaces)  # declared once, on top
        return etree.tostring(canonical_root, pretty_print=True, encoding="unicode")
    if suffix == ".json":
        return json.dumps(json.loads(data), ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    return data.decode("cp932" if suffix == ".dat" else "utf-8", errors="backslashreplace")


def output_suffix(case: GoldenCase) -> str:
    return case.expected.suffix


def run_case(mapping: Mapping, case: GoldenCase) -> GoldenResult:
    section = mapping.section(case.service, case.direction)
    if section is None:
        return GoldenResult(case, False, f"no {case.direction} section for {case.service}", [])
    data = case.input.read_bytes()
    if case.direction == "inbound" and section.format.multi_record:
        count = sum(1 for _ in section.format.records(data))
        if count != 1:  # translate reads the first: the others would pass unseen
            return GoldenResult(
                case, False, f"{case.input.name} holds {count} records: a case is one record", []
            )
    translation: Translation = section.translate(data)
    if translation.output is None:
        return GoldenResult(case, False, "translation failed", translation.findings)
    try:
        expected = case.expected.read_bytes()
    except OSError as error:
        return GoldenResult(case, False, f"expected output unreadable: {error}", [])
    suffix = case.expected.suffix
    try:
        want = canonical(expected, suffix)
    except (etree.XMLSyntaxError, ValueError) as error:  # JSONDecodeError is a ValueError
        kind = {".xml": "well-formed XML", ".json": "JSON"}.get(suffix, suffix)
        return GoldenResult(
            case, False, f"{case.expected}: expected output is not {kind} ({error})", []
        )
    got = canonical(translation.output, suffix)
    if want == got:
        return GoldenResult(case, True, "", translation.findings)
    diff = "".join(
        difflib.unified_diff(
            want.splitlines(keepends=True),
            got.splitlines(keepends=True),
            fromfile=str(case.expected),
            tofile="translated",
        )
    )
    return GoldenResult(case, False, diff, translation.findings)
