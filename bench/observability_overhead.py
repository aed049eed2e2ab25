"""What the observability instrumentation costs (issue 8): dispatch with and without it.

(a) A/B: the embedded dispatch scenario of ``hub_throughput.py`` (N messages × 3 deliveries
    pre-filled while the destinations are paused, then the in-process workers deliver them
    to three recording receivers), alternately with the instrumentation as shipped and with
    the worker's hooks (send timing, bound log context, counters/histograms/log lines of a
    round) replaced by no-ops. The runs alternate so a neighbour's load hits both.
(b) micro: the hooks alone, per delivery (a 50-job round of delivered results) and per
    ingested message (``ingest_observed`` with its JSON log line rendered to /dev/null).

Run: ``.venv/bin/python bench/observability_overhead.py [--prefill 2000 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

import hub_fixtures as fx
import hub_throughput as hub_bench
import yaml

import bus.dispatch.worker as worker_module
from bus.dispatch.claims import Job
from bus.dispatch.transport import Outcome, SendResult
from bus.hub import Hub
from bus.observability.events import delivery_context, ingest_observed, round_committed
from bus.observability.logs import bound, configure_logging
from bus.settings import Settings
from bus.store.audit import AuditEntry

SHIPPED = (worker_module.round_committed, worker_module.bound, worker_module.perf_counter)


def _instrumented(on: bool) -> None:
    if on:
        worker_module.round_committed, worker_module.bound, worker_module.perf_counter = SHIPPED
    else:
        worker_module.round_committed = lambda *_args: None
        worker_module.bound = lambda _context: contextlib.nullcontext()
        worker_module.perf_counter = lambda: 0.0


def http_config(directory: Path) -> Path:
    """hub_fixtures' configuration with every subscriber on plain HTTP (the recording
    receivers), whatever transport the shipped sample configuration gives it."""
    config = fx.config_dir(directory, hub_bench.PORTS)
    path = config / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        if system["id"] in hub_bench.PORTS:
            system["endpoint"]["transport"] = "http"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return config


HUB_CPU = "bench process (hub)"


def ab(prefill: int, rounds: int, directory: Path) -> dict[str, list[tuple[float, float]]]:
    """Per variant and run: (deliveries/s, CPU µs of the hub process per delivery)."""
    config = http_config(directory)
    bodies = fx.corpus(prefill)
    rates: dict[str, list[tuple[float, float]]] = {"instrumented": [], "hooks off": []}
    for number in range(rounds):
        for label, on in (("instrumented", True), ("hooks off", False)):
            _instrumented(on)
            settings = Settings(data_dir=directory / f"{label}-{number}", config_dir=config)
            result = hub_bench.dispatch_scenario(
                label,
                settings,
                [fx.renumber(b) for b in bodies],
                directory,
                worker_processes=0,
                worker_options=[],
            )
            assert "FAILED" not in result.checks, result.checks
            cpu = result.cpu[HUB_CPU] / result.deliveries * 1e6
            rates[label].append((result.rate, cpu))
    _instrumented(True)
    return rates


def micro_dispatch(batch: int = 50, repeat: int = 2000) -> float:
    """CPU µs per delivery of the worker's hooks."""
    now = datetime.now(UTC)
    jobs = [
        Job(i, f"m{i}", None, "ResidentChangeNotice", "412066", "zeimu", b"", now)
        for i in range(batch)
    ]
    done = [(job, SendResult(Outcome.DELIVERED)) for job in jobs]
    seconds = {job.delivery_id: 0.001 for job in jobs}
    audits = [
        AuditEntry(job.tenant, "delivered", job.message_id, {"delivery": job.delivery_id})
        for job in jobs
    ]

    def one_round() -> None:
        for job in jobs:
            started = time.perf_counter()
            with bound(delivery_context(job)):
                pass
            seconds[job.delivery_id] = time.perf_counter() - started
        round_committed(done, seconds, audits, now)

    timer = timeit.Timer(one_round, timer=time.thread_time)  # CPU time: less load-dependent
    rounds = repeat // 10
    return min(timer.repeat(number=rounds, repeat=25)) / rounds / batch * 1e6


def micro_ingest(directory: Path, repeat: int = 2000) -> tuple[float, float]:
    """CPU µs per message of ``ingest_observed`` and of ``Hub.ingest`` (the calling thread's;
    an idle hub commits each message on that thread)."""
    hub = Hub.open(
        Settings(data_dir=directory / "micro", config_dir=fx.config_dir(directory, hub_bench.PORTS))
    )
    try:
        bodies = [fx.renumber(b) for b in fx.corpus(200)]
        started = time.thread_time()
        messages = [hub.ingest(b, adapter="bench", source_address="127.0.0.1") for b in bodies]
        ingest = (time.thread_time() - started) / len(bodies) * 1e6
        assert all(m.ack is not None for m in messages)
        index = hub.config.current().index
        message = messages[0]
        timer = timeit.Timer(lambda: ingest_observed(message, index, 0.001), timer=time.thread_time)
        hook = min(timer.repeat(number=repeat // 4, repeat=20)) * 4
        return hook / repeat * 1e6, ingest
    finally:
        hub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prefill", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with open(os.devnull, "w") as sink:
        configure_logging("INFO", stream=sink)  # lines rendered, as in production
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        with tempfile.TemporaryDirectory(prefix="renkei-obs-") as tmp:
            directory = Path(tmp)
            per_delivery = micro_dispatch()  # first: a fresh process, nothing else running
            per_message, ingest = micro_ingest(directory)
            rates = ab(args.prefill, args.rounds, directory)
        configure_logging("INFO", stream=io.StringIO())
    on = statistics.median(rate for rate, _ in rates["instrumented"])
    off = statistics.median(rate for rate, _ in rates["hooks off"])
    cpu_on = statistics.median(cpu for _, cpu in rates["instrumented"])
    cpu_off = statistics.median(cpu for _, cpu in rates["hooks off"])
    print("\n| dispatch (embedded, SQLite, 2 workers) | deliveries/s (median) | runs |", end="")
    print(" hub CPU µs/delivery (median) |")
    print("| --- | ---: | --- | ---: |")
    for label, values in rates.items():
        runs = ", ".join(f"{rate:,.0f}" for rate, _ in values)
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"| {label} | {rate:,.0f} | {runs} | {cpu:,.0f} |")
    print(f"\ninstrumented / hooks off: throughput {on / off:.3f}, hub CPU {cpu_on / cpu_off:.3f}")
    print(
        f"worker hooks alone: {per_delivery:.1f} CPU µs per delivery "
        f"({per_delivery / cpu_off * 100:.2f} % of the hub's CPU per delivery)"
    )
    print(
        f"ingest hook alone: {per_message:.1f} CPU µs per message; Hub.ingest itself "
        f"{ingest:,.0f} CPU µs per message ({per_message / ingest * 100:.2f} %)"
    )


if __name__ == "__main__":
    main()
