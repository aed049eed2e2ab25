"""The import's layout: the mapping file's 登記済通知 section, and the refusal to start."""

from __future__ import annotations

from pathlib import Path

from bus.errors import make_finding
from bus.mapping import MappingError, Section, load_mapping
from bus.pipeline import Finding
from bus.resources import data_dir

DEFAULT_LAYOUT = "houmu.yaml"


class ImportRefused(Exception):
    """The import cannot start (unknown tenant, unusable layout); carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


def refuse(reason: str) -> ImportRefused:
    return ImportRefused(make_finding("RK-IMP005", path="/import", actual=reason))


def layout_path(layout: str | None) -> Path:
    """The layout's file: ``layout`` as given when it is a file (relative to the current
    folder, or absolute); else a bare name (no folder in it) of a shipped mapping, with or
    without ``.yaml`` (``houmu_fixed``, ``houmu.yaml``: the default)."""
    given = Path(layout or DEFAULT_LAYOUT)
    if layout and given.is_file():
        return given
    shipped = data_dir("mappings")
    if given.name == str(given):
        for name in (given.name, f"{given.name}.yaml"):
            if (shipped / name).is_file():
                return shipped / name
    raise refuse(f"--layout {layout}: no such file, nor a mapping of that name in {shipped}")


def load_section(layout: str | None) -> Section:
    """The layout's RegistrationNotice section (the file: :func:`layout_path`)."""
    path = layout_path(layout)
    try:
        mapping = load_mapping(path)
    except MappingError as error:
        raise refuse(error.first) from None  # with its code (RK-MAP013…), as mapping check
    section = mapping.section("RegistrationNotice", "inbound")
    if section is None:
        raise refuse(f"{layout or DEFAULT_LAYOUT} has no RegistrationNotice inbound section")
    return section
