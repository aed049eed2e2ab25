"""Batch import throughput (issue 6): end to end vs decode + parse alone, on the same file.

    .venv/bin/python bench/import_throughput.py --records 100000

Generates a CP932 登記済通知 file (bus.imports.generator), then runs each mode in a fresh
subprocess so peak RSS is its own: (1) decode: split lines, decode, CSV split — the part
before the mapping; (2) decode + parse: the same plus the houmu mapping to a service element
and its record, the key and 要確認 checks (``NoticeParser``) — no hub; ``parse/jN`` the same
in N worker processes fed 1,000-line chunks, as ``--jobs N`` divides it; (3) end to end:
``run_import`` into a fresh SQLite hub (``Hub.ingest_many`` through every pipeline stage,
1,000 records a transaction, routed to kotei), owner matching against a resident index, and
the XLSX/CSV outputs, with the chunks worked in this process (``e2e``) or in N worker
processes (``e2e/jN``, ``renkei import notices --jobs N``), into a scratch PostgreSQL
database with ``/pg`` (``e2e/pg``, ``e2e/j2/pg``; the server's CPU is not counted). Each
line gives wall seconds and
the CPU seconds of the process and its workers (the machine is shared: the CPU figure is the
per-core one); peak RSS is the importing process's, and each worker's peak beside it.
``--every N`` also prints, while the end-to-end import runs, the rate and peak RSS of each N
records (whether they stay flat as the store grows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bus.imports.lines import RawLine
    from bus.imports.records import NoticeParser
    from bus.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def decode_only(path: Path) -> dict[str, float]:
    from bus.imports.encoding import csv_fields, decode_line, detect_encoding
    from bus.imports.lines import split_lines

    with path.open("rb") as stream:
        encoding = detect_encoding(stream).encoding
        start, cpu, records = time.perf_counter(), time.process_time(), 0
        for line in split_lines(stream):
            text = decode_line(line.data, encoding)
            if isinstance(text, str) and len(csv_fields(text) or ()) > 1:
                records += 1
    return {  # less the header row
        "records": records - 1,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }


def decode_parse(path: Path) -> dict[str, float]:
    from bus.imports.encoding import detect_encoding
    from bus.imports.layout import load_section
    from bus.imports.lines import split_lines
    from bus.imports.records import Notice, NoticeParser

    section = load_section(None)
    with path.open("rb") as stream:
        encoding = detect_encoding(stream).encoding
        parser = NoticeParser(section, encoding, "412066", "武雄市")
        start, cpu, records = time.perf_counter(), time.process_time(), 0
        for line in split_lines(stream):
            if isinstance(parser.parse(line), Notice):
                records += 1
    return {
        "records": records,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }


_parser: NoticeParser | None = None


def _start_parser(encoding: str) -> None:
    global _parser
    from bus.imports.layout import load_section
    from bus.imports.records import NoticeParser

    _parser = NoticeParser(load_section(None), encoding, "412066", "武雄市")


def _parse_chunk(chunk: list[RawLine], at_head: bool) -> int:
    from bus.imports.records import Notice

    assert _parser is not None, "worker not started"
    _parser.header_seen = not at_head  # as ChunkWork.process does
    return sum(isinstance(_parser.parse(line), Notice) for line in chunk)


def decode_parse_parallel(path: Path, jobs: int) -> dict[str, float]:
    """Decode + parse as ``--jobs N`` divides it: this process splits the lines and hands
    1,000-line chunks to N spawned workers, each decoding and parsing its chunks (in the
    import they then go on through the hub). Timed from the first line read; the workers'
    start (each imports the mapping engine and loads the section) is reported apart."""
    from concurrent.futures import Future, ProcessPoolExecutor
    from multiprocessing import get_context

    from bus.imports.encoding import detect_encoding
    from bus.imports.lines import split_lines

    with path.open("rb") as stream:
        encoding = detect_encoding(stream).encoding
        started = time.perf_counter()
        context = get_context("spawn")
        with ProcessPoolExecutor(jobs, context, _start_parser, (encoding,)) as pool:
            list(pool.map(_parse_chunk, [[]] * jobs, [False] * jobs))  # every worker up
            start_up = time.perf_counter() - started
            start, cpu = time.perf_counter(), _cpu_with_workers()
            pending: deque[Future[int]] = deque()
            records, chunk, at_head = 0, [], True
            for line in split_lines(stream):
                chunk.append(line)
                if len(chunk) == 1000:
                    pending.append(pool.submit(_parse_chunk, chunk, at_head))
                    chunk, at_head = [], False
                    if len(pending) > 2 * jobs:
                        records += pending.popleft().result()
            if chunk:
                pending.append(pool.submit(_parse_chunk, chunk, at_head))
            records += sum(future.result() for future in pending)
            seconds, cpu_seconds = time.perf_counter() - start, _cpu_with_workers() - cpu
    return {
        "records": records,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "start_up_seconds": start_up,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def interval_printer(every: int) -> Callable[[int, int, int], None]:
    """A progress callback printing each ``every`` records' rate, CPU rate (this process and
    its import workers) and peak RSS (this process's, and the largest worker's)."""
    last = [0, time.perf_counter(), _cpu_with_workers()]

    def printed(records: int, _errors: int, _bytes: int) -> None:
        if records - last[0] < every:
            return
        now, cpu = time.perf_counter(), _cpu_with_workers()
        done = records - last[0]
        workers = max((_peak_kb(pid) for pid in _children()), default=0) / 1024
        print(
            f"  up to {records:>9,} records: {done / (now - last[1]):7,.0f} records/s "
            f"({done / (cpu - last[2]):7,.0f} records/CPU s), peak RSS {_peak_rss_mb():.0f} MB"
            + (f", workers <= {workers:.0f} MB" if workers else ""),
            flush=True,
        )
        last[:] = [records, now, cpu]

    return printed


def _children() -> list[int]:
    """This process's live children (Linux /proc): the import's worker processes."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        pids += [int(pid) for pid in (task / "children").read_text().split()]
    return pids


def _cpu_with_workers() -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in _children():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _peak_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def end_to_end(
    path: Path, work: Path, every: int = 0, jobs: int = 1, database_url: str | None = None
) -> dict[str, float]:
    from bus.collector import tune_collector
    from bus.hub import Hub
    from bus.imports.residents import ResidentIndex
    from bus.imports.runner import ImportOptions, run_import
    from bus.settings import Settings

    settings = Settings(data_dir=work / "data", database_url=database_url)
    _prepare_store(settings)
    hub = Hub.open(settings)
    index = ResidentIndex(work / "residents.sqlite")
    index.load_extract(ROOT / "samples" / "notices" / "residents-412066.csv", "412066")
    tune_collector(settings.gc_young_threshold)  # as `renkei import notices` does
    start, cpu = time.perf_counter(), time.process_time()
    progress = interval_printer(every) if every else None
    options = ImportOptions(path, "412066", out_dir=work / "out", jobs=jobs)
    summary = run_import(hub, options, index, progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    hub.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "records": summary.new,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds + children.ru_utime + children.ru_stime,
        "worker_peak_rss_mb": children.ru_maxrss / 1024 if jobs > 1 else 0.0,
    }


def _prepare_store(settings: Settings) -> None:
    """The store as the hub that serves it leaves it: migrated, its configuration loaded, by
    another process (any command does it on an empty database), so the measured import
    opens it as `renkei import notices` opens a store in use."""
    environment = os.environ | {"RENKEI_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        environment["RENKEI_DATABASE_URL"] = settings.database_url
    renkei = Path(sys.executable).with_name("renkei")
    subprocess.run([renkei, "config", "show"], env=environment, capture_output=True, check=True)


def child(mode: str, path: Path, work: Path, every: int) -> None:
    if mode == "decode":
        result = decode_only(path)
    elif mode == "parse":
        result = decode_parse(path)
    elif mode.startswith("parse/j"):  # parse/jN: decode + parse in N worker processes
        result = decode_parse_parallel(path, int(mode.removeprefix("parse/j")))
    else:  # e2e, e2e/jN (N worker processes), either with /pg (a scratch PostgreSQL store)
        jobs = next((int(part[1:]) for part in mode.split("/") if part.startswith("j")), 1)
        if mode.endswith("/pg"):
            from hub_fixtures import postgres_database

            with postgres_database("import") as url:
                result = end_to_end(path, work, every, jobs, url)
        else:
            result = end_to_end(path, work, every, jobs)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--modes",
        default="decode,parse,e2e,e2e/j2",
        help="e2e/jN: end to end, N workers; .../pg: into PostgreSQL (its CPU not counted)",
    )
    parser.add_argument("--every", type=int, default=0, help="e2e: a line per N records")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.every)
        return
    from bus.imports.generator import generate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "notices.csv"
        generate(path, args.records)
        print(f"file: {args.records:,} records, {path.stat().st_size / 1e6:.1f} MB (CP932)")
        for mode in args.modes.split(","):
            work = Path(tmp) / mode.replace("/", "-")
            work.mkdir(exist_ok=True)
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(path), str(work),
                 "--every", str(args.every)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            *intervals, last = out.stdout.rstrip().splitlines()
            for line in intervals:
                print(line)
            result = json.loads(last)
            rate = result["records"] / result["seconds"]
            workers = result.get("worker_peak_rss_mb")
            start_up = result.get("start_up_seconds")
            print(
                f"{mode:6} {result['records']:>9,.0f} records {result['seconds']:8.1f} s "
                f"{rate:>9,.0f} records/s  (CPU {result['cpu_seconds']:.1f} s: "
                f"{result['records'] / result['cpu_seconds']:,.0f} records/CPU s)  "
                f"peak RSS {result['peak_rss_mb']:.0f} MB"
                + (f", each worker <= {workers:.0f} MB" if workers else "")
                + (f"  (workers' start {start_up:.1f} s, not timed)" if start_up else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
