"""The shared metrics files (``PROMETHEUS_MULTIPROC_DIR``) on a full disk.

prometheus-client grows them sparsely and writes them through ``mmap``: once the disk is full,
the first write to a page no block backs yet (a label set counted for the first time) ended
the process with SIGBUS (exit 135, -7 from ``subprocess``). The hub allocates their blocks
before mapping them (bus/observability/metrics_dir.py): the count is dropped with one warning
and the process goes on. The folder is on the data disk by default (``renkei serve`` with
several processes), which is the disk that fills."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.observability.metrics_dir import AllocatedMmapedDict
from tests.test_disk_full_tmpfs import TinyDisk

ROOT = Path(__file__).resolve().parents[1]

# A hub process counting into the folder: one label set, then the disk filled, then label
# sets counted for the first time (each a new key in the mmap file, past its first 64 KiB),
# then room again; then a scrape with the file of an exited process to fold.
_COUNTING = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from bus.observability.logs import configure_logging
    configure_logging()
    from bus.observability.metrics import exposition, observe_import_chunk
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    observe_import_chunk("before", new=1, duplicate=0, errors=0, nbytes=1)
    ballast = folder.parent / "ballast"
    with ballast.open("ab", buffering=0) as handle:
        for size in (1 << 16, 4096, 512):
            try:
                while True:
                    handle.write(bytes(size))
            except OSError:
                pass
    for i in range(3000):
        observe_import_chunk(f"full-{i:04}", new=1, duplicate=0, errors=0, nbytes=1)
    (folder / "counter_999999.db").write_bytes(b"")  # an exited process's file, cut short
    exposition()  # a scrape folds it: the merged file cannot be written, the scrape answers
    ballast.unlink()
    observe_import_chunk("after", new=1, duplicate=0, errors=0, nbytes=1)
    text = exposition().decode()
    print("before:", 'tenant="before"' in text, "after:", 'tenant="after"' in text)
    """
)


@pytest.fixture
def full_metrics_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (the full disk) needs root")
    root = tmp_path / "disk"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    try:
        folder = root / "metrics"
        folder.mkdir()
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_drops_new_series_instead_of_killing_the_process(
    full_metrics_disk: Path,
) -> None:
    disk = TinyDisk(full_metrics_disk.parent)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(full_metrics_disk)}
    done = subprocess.run(
        [sys.executable, "-c", _COUNTING],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # was -7: SIGBUS
    assert done.stdout.strip() == "before: True after: True", done.stdout
    # one warning for the whole outage, one line once counting works again
    assert done.stderr.count("metrics.not_counted") == 1, done.stderr[-2000:]
    assert "metrics.counted_again" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert disk.free() > 0


def test_the_files_have_blocks_under_every_page_they_map(tmp_path: Path) -> None:
    """Without root: each file the values grow into is allocated, not sparse (what keeps a
    full disk from reaching a mapped page), past prometheus-client's first 64 KiB and doubling
    for keys of every padding."""
    path = tmp_path / "counter_1.db"
    values = AllocatedMmapedDict(str(path))
    try:
        for i in range(2500):
            values.write_value("k" * (i % 9) + f"-{i}", float(i), 0.0)  # type: ignore[no-untyped-call]
            if i % 500 == 0 or i == 2499:
                stat = path.stat()
                assert stat.st_blocks * 512 >= stat.st_size, (i, stat.st_size, stat.st_blocks)
    finally:
        values.close()  # type: ignore[no-untyped-call]
    assert path.stat().st_size >= 1 << 17  # it did grow
    found = AllocatedMmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
    read = {key: value for key, value, _, _ in found}
    assert read["kkkk-2497"] == 2497.0 and len(read) == 2500
