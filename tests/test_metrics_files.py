"""The multiprocess metrics folder over a hub's years: the files of processes that have
exited are folded into one merged file per kind at the next scrape, so the folder does not
grow with every process that ever counted, and the totals stay exactly what they were (a
counter that went down would read as a reset to Prometheus). ``renkei serve``'s reset keeps a
running process's files and totals. Real processes writing real prometheus-client files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pytest import MonkeyPatch

from bus.observability.metrics import MULTIPROC_ENV, exposition
from bus.observability.metrics_dir import reset_multiprocess_dir

ROOT = Path(__file__).resolve().parents[1]
# one process's work: `count` deliveries to zeimu and one send of 0.2 s; with "wait" it stays
# alive (its files in use) until its standard input closes
WRITER = (
    "import sys\n"
    "from bus.observability.metrics import DELIVERIES, DELIVERY_SECONDS\n"
    "DELIVERIES.labels('zeimu', '412066', 'delivered').inc(int(sys.argv[1]))\n"
    "DELIVERY_SECONDS.labels('zeimu').observe(0.2)\n"
    "print('counted', flush=True)\n"
    "if sys.argv[2:] == ['wait']:\n"
    "    sys.stdin.read()\n"
)


def _writers(directory: Path, counts: list[int], wait: bool = False) -> list[subprocess.Popen[str]]:
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    started = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(count), *(["wait"] if wait else [])],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for count in counts
    ]
    for process in started:
        assert process.stdout is not None and process.stdout.readline() == "counted\n"
        if not wait:
            process.communicate(timeout=30)
            assert process.returncode == 0
    return started


def _totals(directory: Path, monkeypatch: MonkeyPatch) -> tuple[float, float]:
    """(deliveries to zeimu, sends to zeimu) as a scrape of the folder reads them."""
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition().decode())
        for sample in family.samples
        if sample.labels.get("destination") == "zeimu"
    }
    return samples["renkei_deliveries_total"], samples["renkei_delivery_duration_seconds_count"]


def _files(directory: Path) -> list[str]:
    return sorted(file.name for file in directory.glob("*.db"))


def test_exited_processes_files_fold_into_one_per_kind_and_totals_stay(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    _writers(directory, [1, 2, 3])
    assert len(_files(directory)) == 6  # a counter and a histogram file per process
    assert _totals(directory, monkeypatch) == (6, 3)
    assert _files(directory) == ["counter_merged.db", "histogram_merged.db"]
    assert _totals(directory, monkeypatch) == (6, 3)  # read again: nothing counted twice

    # more processes come and go, one is still running: its files are its own
    (running,) = _writers(directory, [10], wait=True)
    try:
        _writers(directory, [4, 5])
        assert _totals(directory, monkeypatch) == (25, 6)
        assert set(_files(directory)) == {
            "counter_merged.db",
            f"counter_{running.pid}.db",
            f"histogram_{running.pid}.db",
            "histogram_merged.db",
        }
    finally:
        running.communicate(timeout=30)
    assert _totals(directory, monkeypatch) == (25, 6)  # it exited: folded, still counted
    assert _files(directory) == ["counter_merged.db", "histogram_merged.db"]


def test_a_serve_started_beside_a_running_one_keeps_its_totals(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    """A second ``renkei serve`` on the same data folder resets the folder at its start: the
    running processes' counts, including those of its processes that have exited, stay."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    _writers(directory, [2, 3])  # the first serve's processes that have exited
    (running,) = _writers(directory, [7], wait=True)
    try:
        reset_multiprocess_dir(directory)
        assert _totals(directory, monkeypatch) == (12, 3)
    finally:
        running.communicate(timeout=30)
    reset_multiprocess_dir(directory)  # nothing runs: the counters restart with the hub
    assert _files(directory) == []
