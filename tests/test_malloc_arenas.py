"""bus/malloc_arenas.py: the cap holds, counted by glibc itself (``malloc_info``'s heaps)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Eight threads allocate at once, then glibc describes its arenas (one <heap> each).
PROBE = """
import ctypes, sys, threading
from bus.malloc_arenas import cap_malloc_arenas
cap, report = int(sys.argv[1]), sys.argv[2].encode()
if cap:
    assert cap_malloc_arenas(cap)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
together = threading.Barrier(8)
def work():
    together.wait()
    blocks = [libc.malloc(4096) for _ in range(500)]
    together.wait()
    for block in blocks:
        libc.free(block)
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
out = libc.fopen(report, b"w")
libc.malloc_info(0, out)
libc.fclose(out)
"""


def _arenas(cap: int, tmp_path: Path) -> int:
    report = tmp_path / f"malloc-{cap}.xml"
    subprocess.run([sys.executable, "-c", PROBE, str(cap), str(report)], check=True, timeout=60)
    return report.read_text().count("<heap nr=")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc option")
def test_capped_process_uses_at_most_that_many_arenas(tmp_path: Path) -> None:
    assert _arenas(0, tmp_path) > 2  # glibc's default: a new arena for each new thread
    assert _arenas(2, tmp_path) <= 2
