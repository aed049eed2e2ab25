"""``.renkei-base``: the version a configuration directory was exported or last applied as.

Two integrators editing copies of one hub's configuration must not undo each other's applies
(a lost update). ``renkei config export`` and ``renkei config apply`` write this small file
beside the YAML (the loader reads only ``*.yaml``/``*.yml``, so it is never configuration);
the next ``config apply`` of the directory gives it as the base, and the store refuses an edit
that lacks what was applied since (:func:`bus.config.snapshots.undone_paths`). The digest tells
a version of this hub from a same-numbered one of another hub (a staging database, say).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from bus.config.loader import CONFIG_SUFFIXES, ConfigError
from bus.config.snapshots import Base

MARKER = ".renkei-base"
_HEADER = (
    "# renkei: the configuration version this directory was exported or last applied as\n"
    "# (written by `renkei config export` and `renkei config apply`; keep it with the files,\n"
    "# in git too: the next apply refuses to undo what others applied since). Do not edit.\n"
)
_LINE = re.compile(r"^(version|sha256):\s*(\S+)\s*$")


def read_base(directory: Path) -> Base | None:
    """The directory's base, or ``None`` when it has no marker."""
    path = directory / MARKER
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{MARKER}:0: cannot be read ({error})"]) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise ConfigError([f"{MARKER}:{number}: expected 'version: N' or 'sha256: HEX'"])
        values[match[1]] = match[2]
    version = values.get("version", "")
    if not version.isdigit() or int(version) < 1:
        raise ConfigError([f"{MARKER}:0: no 'version: N' (a version number from 1)"])
    return Base(int(version), values.get("sha256"))


def write_base(directory: Path, base: Base) -> None:
    """Record ``base`` in the directory (replacing the marker atomically)."""
    text = _HEADER + f"version: {base.version}\n"
    if base.digest is not None:
        text += f"sha256: {base.digest}\n"
    temporary = directory / f"{MARKER}.tmp"
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(directory / MARKER)


def holds_configuration(directory: Path) -> bool:
    """Whether ``directory`` has any ``*.yaml``/``*.yml`` file (an export would mix with it)."""
    return directory.exists() and any(
        path.suffix in CONFIG_SUFFIXES and path.is_file() for path in directory.rglob("*")
    )


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or "\\" in name


def write_directory(directory: Path, files: dict[str, str], base: Base) -> None:
    """Write a stored version's ``files`` and its ``base`` into a new or empty directory."""
    unsafe = [name for name in files if _unsafe(name)]
    if unsafe:
        raise ConfigError([f"{name}:0: not a path inside the directory" for name in unsafe])
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    write_base(directory, base)
