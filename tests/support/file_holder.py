"""Another process with a SQLite store file open, as a running hub would have it (the
commands that must not work on a store in use look for such processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLD = (
    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('select 1');"
    " print('open', flush=True); sys.stdin.read()"
)


@contextmanager
def holding_open(database: Path) -> Iterator[int]:
    """The process id of a process holding ``database`` open until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        yield holder.pid
    finally:
        holder.communicate("", timeout=10)
