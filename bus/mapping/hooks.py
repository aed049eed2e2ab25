"""Escape hatches registered by entry point (the core never imports an adapter or plugin):

* ``renkei.mapping.functions``: a named function ``(value: str) -> str`` that a mapping lists
  with ``function: <name>``; it may raise ``ValueError`` to refuse a value;
* ``renkei.mapping.codecs``: a mainframe encoding (JEF, KEIS…) for fixed-width records, an
  object with ``encode(str) -> bytes`` and ``decode(bytes) -> str``, used by
  ``encoding: <name>`` when Python has no codec of that name.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Protocol

FUNCTION_GROUP = "renkei.mapping.functions"
CODEC_GROUP = "renkei.mapping.codecs"

MappingFunction = Callable[[str], str]


class Codec(Protocol):
    def encode(self, text: str) -> bytes: ...

    def decode(self, data: bytes) -> str: ...


_registered_functions: dict[str, MappingFunction] = {}
_registered_codecs: dict[str, Codec] = {}


def register_function(name: str, function: MappingFunction) -> None:
    """Register a function in process (an entry point does the same for a package)."""
    _registered_functions[name] = function


def register_codec(name: str, codec: Codec) -> None:
    _registered_codecs[name] = codec


@cache
def _entry_point_functions() -> dict[str, MappingFunction]:
    return {entry.name: entry.load() for entry in entry_points(group=FUNCTION_GROUP)}


@cache
def _entry_point_codecs() -> dict[str, Codec]:
    return {entry.name: entry.load()() for entry in entry_points(group=CODEC_GROUP)}


def find_function(name: str) -> MappingFunction | None:
    return _registered_functions.get(name) or _entry_point_functions().get(name)


class _PythonCodec:
    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, text: str) -> bytes:
        return text.encode(self.name)

    def decode(self, data: bytes) -> str:
        return data.decode(self.name)


def find_codec(name: str) -> Codec | None:
    """A Python codec by that name, else a registered one."""
    found = _registered_codecs.get(name) or _entry_point_codecs().get(name)
    if found is not None:
        return found
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return _PythonCodec(name)


# --- functions shipped with renkei (registered in pyproject.toml) ---------------------------

_AMOUNT = re.compile(r"[,，\s　円]")


def amount_plain(value: str) -> str:
    """``1,234,567円`` / ``１，２３４円`` → ``1234567`` (amounts as vendors print them)."""
    digits = _AMOUNT.sub("", value).translate({c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)})
    if not re.fullmatch(r"-?[0-9]+", digits):
        raise ValueError("not an amount")
    return str(int(digits))


def amount_with_commas(value: str) -> str:
    """``1234567`` → ``1,234,567``."""
    return f"{int(value):,}"
