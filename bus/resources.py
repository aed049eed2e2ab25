"""Where the shipped data directories are, in a source checkout and in an installed wheel.

A wheel carries ``schemas/`` and ``mappings/`` inside the package as ``bus/_data/…``
(pyproject's force-include); a checkout or editable install reads them at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """The directory ``name`` (``schemas``, ``mappings``…) wherever this installation keeps it."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"renkei data directory {name!r} not found near {_PACKAGE_DIR}")


def schemas_dir() -> Path:
    return data_dir("schemas")


def codes_dir() -> Path:
    return data_dir("schemas") / "codes"
