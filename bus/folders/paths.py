"""Where a configured folder is and how files move through it: a file being processed sits
in ``work/``, then goes to ``done/`` or ``error/`` with its report beside it; nothing is
deleted."""

from __future__ import annotations

import errno
import os
from pathlib import Path

WORK, DONE, ERROR = "work", "done", "error"
REPORT_SUFFIX = ".report.json"


def resolve_folder(path: str, data_dir: Path) -> Path:
    """An absolute folder as configured, a relative one under the data directory."""
    folder = Path(path).expanduser()
    return folder if folder.is_absolute() else (data_dir / folder).resolve()


def readable_name(name: str) -> str:
    """A file name as staff read it, for reports and logs. A name whose bytes are not UTF-8
    is usually CP932 (a Windows client on a share mounted without the right character set)
    and is read as such; anything else keeps its bytes as ``\\x..`` escapes. (The file
    itself keeps its name: only the text about it is decoded.)"""
    raw = os.fsencode(name)
    for encoding in ("utf-8", "cp932"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "backslashreplace")


def free_name(directory: Path, name: str) -> Path:
    """``directory/name``, or ``name.1``, ``name.2``… when a file of that name is there (a
    re-delivered file never overwrites the earlier one)."""
    candidate, number = directory / name, 0
    while candidate.exists() or Path(f"{candidate}{REPORT_SUFFIX}").exists():
        number += 1
        candidate = directory / f"{name}.{number}"
    return candidate


def move_unless_there(source: Path, target: Path) -> bool:
    """Move ``source`` to ``target`` (same file system) unless ``target`` exists, never
    replacing it; False when ``target`` exists or ``source`` is gone. A hard link is the
    atomic no-clobber move; a file system without hard links (some network shares) gets a
    check before the rename."""
    try:
        os.link(source, target)
    except (FileExistsError, FileNotFoundError):
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if target.exists():
            return False
        try:
            source.rename(target)
        except FileNotFoundError:
            return False
        return True
    source.unlink(missing_ok=True)
    return True


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, data: bytes) -> None:
    """Write under a temporary dot-name, fsync, then rename into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
