"""Hub throughput (issue 3): ingest + fan-out to three real HTTP subscribers, and dispatch
alone from a pre-filled store with 1 vs 2 worker processes, with CPU time per component and
a raw-HTTP baseline in the same run.

(a) ingest: messages go through ``Hub.ingest`` (authenticate, validate, authorize, route,
    store) from ``--senders`` threads while the dispatch workers deliver them to three
    recording receivers (subprocesses). Embedded: SQLite + memory wake-ups + the in-process
    workers ``renkei serve`` runs; scale-out: PostgreSQL + RabbitMQ with ``renkei worker``
    processes.
(b) dispatch: N messages × 3 deliveries are stored while the three destinations are paused;
    the clock starts when they are resumed (one commit + a wake-up) and stops when the
    receivers have everything. Workers are ``renkei worker`` processes on PostgreSQL. The
    baseline is a plain httpx loop POSTing the same bodies to the same (fresh) receivers.

Run: ``.venv/bin/python bench/hub_throughput.py`` (``--help`` for sizes and options).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import hub_fixtures as fx
import hub_procs as procs
import sqlalchemy

from bus.config.snapshots import ensure_config
from bus.dispatch import operations
from bus.dispatch.wakeup import Wakeups
from bus.hub import Hub
from bus.settings import Settings
from bus.store.db import Store, open_store

PORTS = {name: 19_501 + i for i, name in enumerate(fx.SUBSCRIBERS)}


@dataclass
class Result:
    label: str
    seconds: float
    messages: int
    deliveries: int
    ingest_seconds: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    checks: str = ""


@contextmanager
def receivers(directory: Path) -> Iterator[list[procs.Receiver]]:
    started = [procs.Receiver(directory, name, port).start() for name, port in PORTS.items()]
    try:
        yield started
    finally:
        for receiver in started:
            receiver.stop()


def _checks(store: Store, started: Sequence[procs.Receiver], messages: int) -> str:
    """Everything delivered once, in order, and every audit chain verifies."""
    deadline = time.monotonic() + 30
    while fx.delivered_count(store.sessions).get("pending") and time.monotonic() < deadline:
        time.sleep(0.05)  # the last outcomes are committed just after the last send
    states = fx.delivered_count(store.sessions)
    applied = resends = disorder = 0
    for receiver in started:
        for line in receiver.log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            applied += bool(record["applied"])
            resends += bool(record["duplicate"])
            disorder += record.get("in_order") is False
    chains = fx.chains_verify(store.sessions)
    ok = states == {"delivered": 3 * messages} and applied == 3 * messages
    ok = ok and not disorder and chains
    return (
        f"{'ok' if ok else 'FAILED'}: {states.get('delivered', 0):,} delivered, "
        f"{applied:,} applied, {resends} resends, {disorder} out of order, "
        f"chains {'verify' if chains else 'BROKEN'}"
    )


# --- (a) ingest + fan-out ------------------------------------------------------------------


def ingest_scenario(
    label: str,
    settings: Settings,
    bodies: Sequence[bytes],
    directory: Path,
    *,
    senders: int,
    worker_processes: int,
    worker_options: Sequence[str],
) -> Result:
    with receivers(directory) as started:
        hub = Hub.open(settings)
        workers: list[subprocess.Popen[bytes]] = []
        pool = None
        if worker_processes:
            env = _worker_env(settings)
            workers = [
                procs.start_worker_process(env, *worker_options) for _ in range(worker_processes)
            ]
            _settle([w.pid for w in workers])
        else:
            pool = hub.workers(settings.dispatch_workers)
            pool.start()
        meter = procs.CpuMeter(_groups(settings, started, workers))
        hub.ingest(bodies[0], adapter="bench", source_address="127.0.0.1")  # warm the caches
        meter.start()
        start = time.monotonic()

        def send(body: bytes) -> None:
            message = hub.ingest(body, adapter="bench", source_address="127.0.0.1")
            assert message.ack is not None, [f.code for f in message.findings]

        with ThreadPoolExecutor(senders) as executor:
            list(executor.map(send, bodies[1:]))
        ingested = time.monotonic()
        end = procs.wait_until_applied(started, 3 * len(bodies), timeout=120)
        cpu = meter.stop()
        if pool is not None:
            pool.stop()
        for worker in workers:
            procs.stop_process(worker)
        checks = _checks(hub.store, started, len(bodies))
        hub.close()
    return Result(
        label, end - start, len(bodies) - 1, 3 * (len(bodies) - 1), ingested - start, cpu, checks
    )


def _worker_env(settings: Settings) -> dict[str, str]:
    return {
        "RENKEI_DATABASE_URL": settings.effective_database_url,
        "RENKEI_BROKER_URL": settings.broker_url,
        "RENKEI_DATA_DIR": str(settings.data_dir),
        "RENKEI_CONFIG_DIR": str(settings.config_dir),
    }


def _groups(
    settings: Settings,
    started: Sequence[procs.Receiver],
    workers: Sequence[subprocess.Popen[bytes]],
) -> dict[str, list[int] | str]:
    groups: dict[str, list[int] | str] = {"bench process (hub)": [os.getpid()]}
    if workers:
        groups["worker processes"] = [w.pid for w in workers]
    groups["receivers"] = [r.pid for r in started]
    if not settings.is_sqlite:
        groups["postgres"] = "postgres"
        groups["rabbitmq"] = "rabbitmq"
    return groups


def _settle(pids: Sequence[int], timeout: float = 20.0) -> None:
    """Wait until freshly started processes are idle (imports done, polling)."""
    deadline = time.monotonic() + timeout
    last = sum(procs.cpu_seconds(p) for p in pids)
    time.sleep(1.0)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(procs.cpu_seconds(p) for p in pids)
        if now - last < 0.05 * len(pids):
            return
        last = now


# --- (b) dispatch only ---------------------------------------------------------------------


def dispatch_scenario(
    label: str,
    settings: Settings,
    bodies: Sequence[bytes],
    directory: Path,
    *,
    worker_processes: int,
    worker_options: Sequence[str],
) -> Result:
    store = open_store(settings)
    ensure_config(store.sessions, settings)
    with store.sessions.begin() as session:
        for name in fx.SUBSCRIBERS:
            operations.pause(session, name, reason="bench: pre-fill", actor="bench")
    fx.prefill(store.sessions, bodies)
    with receivers(directory) as started:
        env = _worker_env(settings)
        workers = [
            procs.start_worker_process(env, *worker_options) for _ in range(worker_processes)
        ]
        _settle([w.pid for w in workers])
        meter = procs.CpuMeter(_groups(settings, started, workers))
        wakeups = Wakeups(settings.broker_url)
        meter.start()
        start = time.monotonic()
        with store.sessions.begin() as session:
            for name in fx.SUBSCRIBERS:
                operations.resume(session, name, actor="bench")
        wakeups.notify(fx.SUBSCRIBERS)
        end = procs.wait_until_applied(started, 3 * len(bodies), timeout=120)
        cpu = meter.stop()
        wakeups.close()
        errors = [procs.stop_process(w) for w in workers]
        checks = _checks(store, started, len(bodies))
        if "FAILED" in checks:
            checks += " | " + " | ".join(e for e in errors if "Error" in e)[-1500:]
    store.close()
    return Result(label, end - start, len(bodies), 3 * len(bodies), None, cpu, checks)


def raw_baseline(bodies: Sequence[bytes], directory: Path, concurrency: int) -> Result:
    """A plain httpx loop: the same bodies, the same three receivers (fresh logs), the same
    headers, ``concurrency`` threads sharing one client."""
    with receivers(directory) as started:
        client = httpx.Client(limits=httpx.Limits(max_connections=64))
        jobs = [(body, r) for body in bodies for r in started]

        def post(job: tuple[bytes, procs.Receiver]) -> None:
            body, receiver = job
            response = client.post(
                receiver.url,
                content=body,
                headers={
                    "Content-Type": "application/xml; charset=utf-8",
                    "Renkei-Message-Id": fx.header_value(body, "messageId"),
                    "Renkei-Service": fx.SERVICE,
                    "Renkei-Tenant": fx.header_value(body, "tenant"),
                },
            )
            assert response.status_code == 200

        post(jobs[0])
        meter = procs.CpuMeter(
            {
                "bench process (httpx loop)": [os.getpid()],
                "receivers": [r.pid for r in started],
            }
        )
        meter.start()
        start = time.monotonic()
        with ThreadPoolExecutor(concurrency) as executor:
            list(executor.map(post, jobs[1:]))
        end = time.monotonic()
        cpu = meter.stop()
        client.close()
    return Result(
        f"raw httpx loop, {concurrency} threads",
        end - start,
        len(bodies),
        len(jobs) - 1,
        None,
        cpu,
        "",
    )


# --- report ----------------------------------------------------------------------------------


def print_ingest(results: Sequence[Result]) -> None:
    print("\n### (a) Ingest + fan-out to 3 HTTP subscribers\n")
    print("| setup | messages | ingest msg/s | deliveries/s end to end | seconds | checks |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        assert r.ingest_seconds is not None
        print(
            f"| {r.label} | {r.messages:,} | {r.messages / r.ingest_seconds:,.0f} | "
            f"{r.deliveries / r.seconds:,.0f} | {r.seconds:.1f} | {r.checks} |"
        )
    _print_cpu(results)


def print_dispatch(results: Sequence[Result], baseline: Result) -> None:
    print("\n### (b) Dispatch only, pre-filled store (PostgreSQL + RabbitMQ)\n")
    print("| setup | deliveries | deliveries/s | seconds | vs raw | vs 1 worker | checks |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    raw_rate = baseline.deliveries / baseline.seconds
    one = results[0].deliveries / results[0].seconds
    for r in [baseline, *results]:
        rate = r.deliveries / r.seconds
        print(
            f"| {r.label} | {r.deliveries:,} | {rate:,.0f} | {r.seconds:.1f} | "
            f"{rate / raw_rate:.2f}x | {'' if r is baseline else f'{rate / one:.2f}x'} | "
            f"{r.checks} |"
        )
    _print_cpu([baseline, *results])


def _print_cpu(results: Sequence[Result]) -> None:
    print("\nCPU time per component (ms per delivery; seconds in brackets):\n")
    names = list(dict.fromkeys(name for r in results for name in r.cpu))
    print("| setup | " + " | ".join(names) + " | total |")
    print("| --- |" + " ---: |" * (len(names) + 1))
    for r in results:
        cells = [
            f"{r.cpu[n] / r.deliveries * 1e3:.2f} ({r.cpu[n]:.1f})" if n in r.cpu else ""
            for n in names
        ]
        total = sum(r.cpu.values())
        print(f"| {r.label} | " + " | ".join(cells) + f" | {total / r.deliveries * 1e3:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=["all", "ingest", "dispatch"], default="all")
    parser.add_argument("--messages", type=int, default=3000, help="(a): messages ingested")
    parser.add_argument("--prefill", type=int, default=5000, help="(b): messages pre-filled")
    parser.add_argument("--senders", type=int, default=8, help="(a): concurrent ingest threads")
    parser.add_argument("--threads", type=int, default=1, help="threads per renkei worker")
    parser.add_argument("--batch", type=int, default=50, help="deliveries claimed per round")
    parser.add_argument("--raw-concurrency", type=int, default=8)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    worker_options = ["--concurrency", str(args.threads), "--batch", str(args.batch)]
    print(
        f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"httpx {httpx.__version__}, {os.cpu_count()} CPUs; "
        f"renkei worker {' '.join(worker_options)}"
    )
    with tempfile.TemporaryDirectory(prefix="renkei-bench-") as tmp:
        directory = Path(tmp)
        config = fx.config_dir(directory, PORTS)
        if args.scenario in ("all", "ingest"):
            bodies = fx.corpus(args.messages + 1)
            results = []
            if not args.skip_embedded:
                settings = Settings(data_dir=directory / "embedded", config_dir=config)
                results.append(
                    ingest_scenario(
                        f"embedded: SQLite + memory, {settings.dispatch_workers} in-process "
                        "workers",
                        settings,
                        bodies,
                        directory,
                        senders=args.senders,
                        worker_processes=0,
                        worker_options=worker_options,
                    )
                )
            if not args.skip_postgres:
                with fx.postgres_database("ingest") as url:
                    settings = Settings(
                        data_dir=directory / "pg",
                        config_dir=config,
                        database_url=url,
                        broker_url=fx.RABBITMQ_URL,
                    )
                    results.append(
                        ingest_scenario(
                            "PostgreSQL + RabbitMQ, 1 renkei worker process",
                            settings,
                            bodies,
                            directory,
                            senders=args.senders,
                            worker_processes=1,
                            worker_options=worker_options,
                        )
                    )
            print_ingest(results)
        if args.scenario in ("all", "dispatch"):
            bodies = fx.corpus(args.prefill)
            baseline = raw_baseline(bodies, directory, args.raw_concurrency)
            dispatch: list[Result] = []
            for count in (1, 2):
                with fx.postgres_database(f"dispatch{count}") as url:
                    settings = Settings(
                        data_dir=directory / f"pg{count}",
                        config_dir=config,
                        database_url=url,
                        broker_url=fx.RABBITMQ_URL,
                    )
                    fresh = [fx.renumber(b) for b in bodies]
                    dispatch.append(
                        dispatch_scenario(
                            f"{count} renkei worker process{'es' if count > 1 else ''}",
                            settings,
                            fresh,
                            directory,
                            worker_processes=count,
                            worker_options=worker_options,
                        )
                    )
            print_dispatch(dispatch, baseline)


if __name__ == "__main__":
    main()
