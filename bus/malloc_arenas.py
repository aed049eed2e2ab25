"""Caps glibc's malloc arenas for a threaded hub process.

glibc gives a thread that finds the heap busy an arena of its own (up to 8 per core) and an
arena keeps most of what it once held. lxml/libxml2 and SQLite allocate with ``malloc``, so
every thread that parses or stores grows its own arena by a few MiB: a soak measured +28 %
RSS from minute 1 to 2 with up to 10 ingest threads, +6.5 % over 10 minutes with the arenas
capped at 2 (docs/benchmarks.md, SOAP soak). Python objects live in pymalloc, not affected.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc <malloc.h>


def cap_malloc_arenas(count: int) -> bool:
    """Let this process's ``malloc`` use at most ``count`` arenas from now on (call it before
    starting threads); ``False`` when the C library has no such option (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
