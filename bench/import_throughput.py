"""Batch import throughput (issue 6): end to end vs decode + parse alone, on the same file.

    .venv/bin/python bench/import_throughput.py --records 100000

Generates a CP932 登記済通知 file (bus.imports.generator), then runs each mode in a fresh
subprocess so peak RSS is its own: (1) decode: split lines, decode, CSV split — the part
before the mapping; (2) decode + parse: the same plus the houmu mapping to a service element
and its record, the key and 要確認 checks (``NoticeParser``) — no hub; (3) end to end:
``run_import`` into a fresh SQLite hub (``Hub.ingest_many`` through every pipeline stage,
1,000 records a transaction, routed to kotei), owner matching against a resident index, and
the XLSX/CSV outputs. Each line gives wall seconds and this process's CPU seconds (the
machine is shared: the CPU figure is the per-core one). ``--every N`` also prints, while the
end-to-end import runs, the rate and peak RSS of each N records (whether they stay flat as
the store grows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
    from bus.imports.lines import split_lines
    from bus.imports.records import Notice, NoticeParser
    from bus.imports.runner import load_section

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


def interval_printer(every: int) -> Callable[[int, int, int], None]:
    """A progress callback printing each ``every`` records' rate, CPU rate and peak RSS."""
    last = [0, time.perf_counter(), time.process_time()]

    def printed(records: int, _errors: int, _bytes: int) -> None:
        if records - last[0] < every:
            return
        now, cpu = time.perf_counter(), time.process_time()
        done = records - last[0]
        print(
            f"  up to {records:>9,} records: {done / (now - last[1]):7,.0f} records/s "
            f"({done / (cpu - last[2]):7,.0f} records/CPU s), peak RSS {_peak_rss_mb():.0f} MB",
            flush=True,
        )
        last[:] = [records, now, cpu]

    return printed


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def end_to_end(path: Path, work: Path, every: int = 0) -> dict[str, float]:
    from bus.collector import tune_collector
    from bus.hub import Hub
    from bus.imports.residents import ResidentIndex
    from bus.imports.runner import ImportOptions, run_import
    from bus.settings import Settings

    settings = Settings(data_dir=work / "data")
    hub = Hub.open(settings)
    index = ResidentIndex(work / "residents.sqlite")
    index.load_extract(ROOT / "samples" / "notices" / "residents-412066.csv", "412066")
    tune_collector(settings.gc_young_threshold)  # as `renkei import notices` does
    start, cpu = time.perf_counter(), time.process_time()
    progress = interval_printer(every) if every else None
    options = ImportOptions(path, "412066", out_dir=work / "out")
    summary = run_import(hub, options, index, progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    hub.close()
    return {"records": summary.new, "seconds": seconds, "cpu_seconds": cpu_seconds}


def child(mode: str, path: Path, work: Path, every: int) -> None:
    if mode == "decode":
        result = decode_only(path)
    else:
        result = decode_parse(path) if mode == "parse" else end_to_end(path, work, every)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--modes", default="decode,parse,e2e")
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
            work = Path(tmp) / mode
            work.mkdir()
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
            print(
                f"{mode:6} {result['records']:>9,.0f} records {result['seconds']:8.1f} s "
                f"{rate:>9,.0f} records/s  (CPU {result['cpu_seconds']:.1f} s: "
                f"{result['records'] / result['cpu_seconds']:,.0f} records/CPU s)  "
                f"peak RSS {result['peak_rss_mb']:.0f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
