"""CPU per message of `renkei serve --http-workers 1 --dispatch-processes 1`, per process.

The SOAP bench's msg/s moves by tens of percent from run to run on a shared VM; CPU seconds
per message, per process, move by 5-10 %. Use this to compare two trees on the "1 HTTP + 1
dispatch process" row: alternate them (A B A B ...), at least five pairs.

    PYTHONPATH=TREE:TREE/bench python bench/soap_cpu_per_process.py LABEL \
        [--seconds 15] [--rate N] [--profile DIR] [--port-base 18500]

Saturating by default (50 connections, as bench/soap_throughput.py); ``--rate N`` paces 10
connections at N msg/s in all. One JSON line: acknowledged and delivered messages, CPU ms
per message of the HTTP process and per delivery of the dispatch process, deliveries per
dispatch round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soap_throughput as st
import wrk_load
from hub_procs import RENKEI, CpuMeter, Receiver


def _stored(data_dir: Path) -> int:
    return st.deliveries(data_dir)[1]


def _attempts_and_rounds(data_dir: Path) -> tuple[int, int]:
    """Delivery attempts so far, and the rounds they were recorded in (one time a round)."""
    database = sqlite3.connect(str(data_dir / "renkei.db"))
    try:
        attempts, rounds = database.execute(
            "SELECT count(*), count(DISTINCT at) FROM delivery_attempts"
        ).fetchone()
    finally:
        database.close()
    return int(attempts), int(rounds)


def _profilers(directory: str, label: str, groups: dict[str, list[int]], seconds: int) -> list:
    """py-spy raw profiles of each hub process, for the length of the measured run."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    record = [spy, "record", "-r", "200", "-d", str(seconds), "--format", "raw", "--threads"]
    record += ["--nonblocking"]
    return [
        subprocess.Popen(
            [*record, "-o", str(out / f"{label}-{name}-{pid}.txt"), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pids in groups.items()
        for pid in pids
    ]


def _wait_applied(sink: Receiver, data_dir: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while sink.applied() < _stored(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=float, help="paced: msg/s in all (10 connections)")
    parser.add_argument("--profile", help="py-spy raw profiles into this directory")
    parser.add_argument("--port-base", type=int, default=18500)
    options = parser.parse_args()
    tree = os.environ.get("PYTHONPATH", "").split(":")[0]
    bodies = st.corpus(500)
    with tempfile.TemporaryDirectory(prefix="renkei-cpu-") as tmp:
        work = Path(tmp)
        data = work / "hub-data"
        sink = Receiver(work, st.SINK, options.port_base).start()
        port = options.port_base + 1
        try:
            env = os.environ | {
                "RENKEI_DATA_DIR": str(data),
                "RENKEI_CONFIG_DIR": str(st.hub_config(work, sink.url)),
            }
            command = [str(RENKEI), "serve", "--no-samples", "--port", str(port)]
            command += ["--http-workers", "1", "--dispatch-processes", "1"]
            hub = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.DEVNULL)
            try:
                base = f"http://127.0.0.1:{port}"
                st.wait_until_up(base + "/healthz")
                time.sleep(1.0)
                children = st.process_tree(hub.pid)[1:]
                for pid in [hub.pid, *children]:  # every hub process runs the tree under test
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                    assert not tree or f"PYTHONPATH={tree}".encode() in environ, pid
                url = base + st.PATH
                connections = 10 if options.rate else options.connections
                delay = connections * 1000 / options.rate if options.rate else None
                script = wrk_load.write_script(work, bodies, run=1, delay_ms=delay)
                wrk_load.run_wrk(url, script, seconds=3, connections=connections)  # warm-up
                _wait_applied(sink, data, 30)
                applied_before = sink.applied()
                groups = {"http": [hub.pid], "dispatch": children}
                meter = CpuMeter(groups)
                spies = (
                    _profilers(options.profile, options.label, groups, options.seconds)
                    if options.profile
                    else []
                )
                attempts_before = _attempts_and_rounds(data)
                meter.start()
                result, _ = wrk_load.run_wrk(
                    url, script, seconds=options.seconds, connections=connections
                )
                _wait_applied(sink, data, 20)
                cpu = meter.stop()
                attempts_after = _attempts_and_rounds(data)
                for spy in spies:
                    spy.wait(60)
                delivered = sink.applied() - applied_before
            finally:
                hub.terminate()
                hub.wait(30)
        finally:
            sink.stop()
    acked = result.acknowledged
    rounds = attempts_after[1] - attempts_before[1]
    print(
        json.dumps(
            {
                "label": options.label,
                "rate": result.per_second,
                "acked": acked,
                "delivered": delivered,
                "errors": result.status_errors + result.socket_errors,
                "http_ms": 1000 * cpu["http"] / max(acked, 1),
                "dispatch_ms": 1000 * cpu["dispatch"] / max(delivered, 1),
                "hub_ms": 1000 * (cpu["http"] + cpu["dispatch"]) / max(acked, 1),
                "steal": meter.steal,
                "p50": result.p50_ms,
                "per_round": (attempts_after[0] - attempts_before[0]) / max(rounds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
