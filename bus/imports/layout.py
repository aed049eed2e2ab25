"""The import's layout: the mapping file's 登記済通知 section, and the refusal to start."""

from __future__ import annotations

from pathlib import Path

from bus.errors import make_finding
from bus.mapping import MappingError, Section, load_mapping, resolve
from bus.pipeline import Finding

DEFAULT_LAYOUT = "houmu.yaml"


class ImportRefused(Exception):
    """The import cannot start (unknown tenant, unusable layout); carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


def refuse(reason: str) -> ImportRefused:
    return ImportRefused(make_finding("RK-IMP005", path="/import", actual=reason))


def load_section(layout: str | None) -> Section:
    """The layout's RegistrationNotice section: a file path (``mappings/houmu_fixed.yaml``)
    or a name under the mappings folder (``houmu.yaml``, the default)."""
    given = Path(layout) if layout else None
    path = given if given is not None and given.is_file() else resolve(layout or DEFAULT_LAYOUT)
    try:
        mapping = load_mapping(path)
    except MappingError as error:
        raise refuse(error.problems[0]) from None
    section = mapping.section("RegistrationNotice", "inbound")
    if section is None:
        raise refuse(f"{layout or DEFAULT_LAYOUT} has no RegistrationNotice inbound section")
    return section
