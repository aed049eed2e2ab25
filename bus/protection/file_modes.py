"""Files renkei creates are not for other local users (DESIGN §7).

The Message Store's SQLite files (bodies in clear), the import work files and the resident
index under ``RENKEI_DATA_DIR/imports/``, an import's 評価変更リスト and error report, the
outbound spools: all hold names, addresses or 個人番号, and all used to be created with the
process's inherited umask (typically 022, so readable by every local account). Rather than
a mode at each of those places, each renkei process adds :data:`PRIVATE_BITS` to its umask
when it starts, so whatever it (or a library such as SQLite) creates is readable by its
owner and group only. An umask that is already stricter is kept.
"""

from __future__ import annotations

import os

#: No access for other users; no writing for the group.
PRIVATE_BITS = 0o027


def keep_files_private() -> None:
    """Add :data:`PRIVATE_BITS` to the process umask (never loosening it). Called once when
    a process starts (the ``renkei`` command line, the ASGI app factory), before any file is
    created; child processes inherit it."""
    current = os.umask(PRIVATE_BITS)
    os.umask(current | PRIVATE_BITS)
