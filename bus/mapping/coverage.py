"""Which catalogue items a system produces (inbound) or consumes (outbound): the pilot's
"72 of 112 used, 42 added" analysis, computed from the mapping files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bus.catalogue import load_catalogue
from bus.mapping.loader import Mapping


@dataclass(frozen=True, slots=True)
class Coverage:
    produced: frozenset[str]  # items some system sends (inbound sections write them)
    consumed: frozenset[str]  # items some system receives (outbound sections read them)

    @property
    def used(self) -> frozenset[str]:
        return self.produced | self.consumed

    def counts(self) -> dict[str, int]:
        catalogue = load_catalogue()
        used = self.used
        return {
            "standard_used": sum(
                1 for i in catalogue.catalogue_items() if i.kind == "standard" and i.id in used
            ),
            "standard_total": catalogue.count("standard"),
            "extension_used": sum(
                1 for i in catalogue.catalogue_items() if i.kind == "extension" and i.id in used
            ),
            "extension_total": catalogue.count("extension"),
        }


def coverage(mappings: Iterable[Mapping]) -> Coverage:
    produced: set[str] = set()
    consumed: set[str] = set()
    for mapping in mappings:
        for (_, direction), section in mapping.sections.items():
            (produced if direction == "inbound" else consumed).update(section.items)
    return Coverage(frozenset(produced), frozenset(consumed))
