"""The mapping engine (DESIGN §5): a connected system's own format ↔ the standard message,
described in YAML (``mappings/<system>.yaml``), checked against the catalogue at load and
compiled once into plain functions."""

from bus.mapping.loader import Mapping, MappingError, cached_mapping, load_mapping, resolve
from bus.mapping.section import Section, Translation

__all__ = [
    "Mapping",
    "MappingError",
    "Section",
    "Translation",
    "cached_mapping",
    "load_mapping",
    "resolve",
]
