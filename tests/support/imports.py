"""Helpers for import tests: the batch work file's cursor, the import's worker processes."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def cursor_line(work_dir: Path, notices: Path | None = None) -> int:
    """The next line a batch in ``work_dir`` (``<data dir>/imports``) will read, that of the
    file ``notices`` when given; 0 before any."""
    prefix = hashlib.sha256(notices.read_bytes()).hexdigest()[:32] if notices else ""
    for path in work_dir.glob(f"{prefix}*.sqlite"):
        try:
            with sqlite3.connect(path) as db:
                row = db.execute("select cursor_line from batch").fetchone()
        except sqlite3.Error:
            continue
        if row:
            return int(row[0])
    return 0


def import_workers(parent: int | None = None) -> list[int]:
    """Live worker processes of parallel imports (multiprocessing's spawned children), those
    of ``parent`` only when it is given."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if b"spawn_main" in command and state != "Z" and parent in (None, int(ppid)):
            found.append(int(proc.name))
    return found
