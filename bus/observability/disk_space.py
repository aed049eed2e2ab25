"""The room left on the disk of ``RENKEI_DATA_DIR``, read at scrape time.

When that disk fills, the store refuses writes (RK-OPS007, RK-STO007; docs/operations.md
*When the disk fills*) and an import stops (RK-IMP015). A town hall's single server may run
no node exporter, so the hub exports the free and total bytes of the filesystem itself, for
an alert some hours before: one ``os.statvfs`` a scrape (no file is read or written, so it
answers on a full disk as well).

With SQLite that filesystem holds the store (``renkei.db`` and its WAL); with PostgreSQL the
store is elsewhere (watch the database server's disk there), and this one still holds the
batch imports' work files, the hot folders' files and, with several processes, the shared
metrics files (``<data_dir>/metrics``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

_WHERE = (
    "the filesystem of RENKEI_DATA_DIR (SQLite: the store; PostgreSQL: not the store, "
    "but the import work files, hot-folder files and shared metrics files)"
)


class DiskSpaceCollector:
    """``renkei_data_dir_free_bytes`` (what the hub's user may still write: ``f_bavail``,
    without the blocks reserved for root) and ``renkei_data_dir_size_bytes`` of the
    filesystem holding ``directory``; both left out when it cannot be read (a folder removed
    or unmounted): the scrape still answers."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        try:
            stats = os.statvfs(self._directory)
        except OSError:
            return
        free = GaugeMetricFamily(
            "renkei_data_dir_free_bytes",
            f"Bytes the hub may still write on {_WHERE}; reserved root blocks not counted.",
        )
        free.add_metric([], stats.f_bavail * stats.f_frsize)
        yield free
        size = GaugeMetricFamily(
            "renkei_data_dir_size_bytes",
            f"Size in bytes of {_WHERE}.",
        )
        size.add_metric([], stats.f_blocks * stats.f_frsize)
        yield size
