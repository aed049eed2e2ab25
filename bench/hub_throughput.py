"""Hub throughput (issue 3): ingest + fan-out to three real HTTP subscribers, and dispatch
alone from a pre-filled store (embedded; PostgreSQL with 1 vs 2 worker processes), with CPU
time per component and raw-HTTP baselines in the same run.

(a) ingest: messages go through ``Hub.ingest`` (authenticate, validate, authorize, route,
    store) from ``--senders`` threads while the dispatch workers deliver them to three
    recording receivers (subprocesses). Embedded: SQLite + memory wake-ups + the in-process
    workers ``renkei serve`` runs; scale-out: PostgreSQL + RabbitMQ with a ``renkei worker``
    process.
(b) dispatch: N messages × 3 deliveries are stored while the three destinations are paused;
    the clock starts when they are resumed (one commit + a wake-up) and stops when the
    receivers have applied everything. Embedded: the in-process workers; PostgreSQL:
    ``renkei worker`` processes. The baselines POST the same bodies to the same (fresh)
    receivers without the hub: a plain httpx loop, and a plain http.client loop.

Every run checks what it measured: all delivered and applied once, in order per subject,
and every audit chain verifies.

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
from pathlib import Path

import httpx
import hub_baselines as baselines
import hub_fixtures as fx
import hub_procs as procs
import sqlalchemy
from hub_report import Result, print_dispatch, print_ingest

from bus.config.snapshots import ensure_config
from bus.dispatch import operations
from bus.dispatch.wakeup import Wakeups
from bus.hub import Hub
from bus.settings import Settings
from bus.store.db import Store, open_store

PORTS = {name: 19_501 + i for i, name in enumerate(fx.SUBSCRIBERS)}
TIMEOUT = 90.0  # a scenario that has not delivered everything by then is reported as such
Popen = subprocess.Popen[bytes]


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


def _worker_env(settings: Settings) -> dict[str, str]:
    return {
        "RENKEI_DATABASE_URL": settings.effective_database_url,
        "RENKEI_BROKER_URL": settings.broker_url,
        "RENKEI_DATA_DIR": str(settings.data_dir),
        "RENKEI_CONFIG_DIR": str(settings.config_dir),
    }


def _groups(
    settings: Settings, started: Sequence[procs.Receiver], workers: Sequence[Popen]
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
    """Wait until freshly started processes (or this one's threads) are idle."""
    deadline = time.monotonic() + timeout
    last = sum(procs.cpu_seconds(p) for p in pids)
    time.sleep(1.0)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(procs.cpu_seconds(p) for p in pids)
        if now - last < 0.05 * len(pids):
            return
        last = now


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
        workers: list[Popen] = []
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
        end, applied = procs.wait_until_applied(started, 3 * len(bodies), TIMEOUT)
        cpu = meter.stop()
        if pool is not None:
            pool.stop()
        for worker in workers:
            procs.stop_process(worker)
        checks = _checks(hub.store, started, len(bodies))
        hub.close()
    messages = len(bodies) - 1
    deliveries = min(applied, 3 * len(bodies)) - 3  # the warm-up message's are not timed
    return Result(
        label, end - start, messages, deliveries, ingested - start, cpu, checks, meter.steal
    )


# --- (b) dispatch only ---------------------------------------------------------------------


def _prefill_paused(settings: Settings, bodies: Sequence[bytes]) -> Store:
    store = open_store(settings)
    ensure_config(store.sessions, settings)
    with store.sessions.begin() as session:
        for name in fx.SUBSCRIBERS:
            operations.pause(session, name, reason="bench: pre-fill", actor="bench")
    fx.prefill(store.sessions, bodies)
    return store


def dispatch_scenario(
    label: str,
    settings: Settings,
    bodies: Sequence[bytes],
    directory: Path,
    *,
    worker_processes: int,
    worker_options: Sequence[str],
) -> Result:
    """``worker_processes`` ``renkei worker`` processes, or 0: the in-process workers of an
    embedded hub (``settings.dispatch_workers`` of them, as ``renkei serve`` runs)."""
    store = _prefill_paused(settings, bodies)
    with receivers(directory) as started:
        hub = pool = None
        workers: list[Popen] = []
        if worker_processes:
            env = _worker_env(settings)
            workers = [
                procs.start_worker_process(env, *worker_options) for _ in range(worker_processes)
            ]
            _settle([w.pid for w in workers])
        else:
            hub = Hub.open(settings)
            pool = hub.workers(settings.dispatch_workers)
            pool.start()
            _settle([os.getpid()])
        meter = procs.CpuMeter(_groups(settings, started, workers))
        wakeups = hub.wakeups if hub is not None else Wakeups(settings.broker_url)
        meter.start()
        start = time.monotonic()
        with store.sessions.begin() as session:
            for name in fx.SUBSCRIBERS:
                operations.resume(session, name, actor="bench")
        wakeups.notify(fx.SUBSCRIBERS)
        end, applied = procs.wait_until_applied(started, 3 * len(bodies), TIMEOUT)
        cpu = meter.stop()
        errors = [procs.stop_process(w) for w in workers]
        if pool is not None:
            pool.stop()
        checks = _checks(store, started, len(bodies))
        if "FAILED" in checks:
            checks += " | " + " | ".join(e for e in errors if "Error" in e)[-1500:]
        if hub is not None:
            hub.close()
        else:
            wakeups.close()
    store.close()
    return Result(label, end - start, len(bodies), applied, None, cpu, checks, meter.steal)


# --- main ----------------------------------------------------------------------------------


def _pg_settings(directory: Path, config: Path, url: str) -> Settings:
    return Settings(
        data_dir=directory, config_dir=config, database_url=url, broker_url=fx.RABBITMQ_URL
    )


def run_ingest(args: argparse.Namespace, directory: Path, config: Path, options: list[str]) -> None:
    bodies = fx.corpus(args.messages + 1)
    results = []
    if not args.skip_embedded:
        settings = Settings(data_dir=directory / "embedded", config_dir=config)
        label = f"embedded: SQLite + memory, {settings.dispatch_workers} in-process workers"
        results.append(
            ingest_scenario(
                label,
                settings,
                bodies,
                directory,
                senders=args.senders,
                worker_processes=0,
                worker_options=options,
            )
        )
    if not args.skip_postgres:
        with fx.postgres_database("ingest") as url:
            results.append(
                ingest_scenario(
                    "PostgreSQL + RabbitMQ, 1 renkei worker process",
                    _pg_settings(directory / "pg", config, url),
                    bodies,
                    directory,
                    senders=args.senders,
                    worker_processes=1,
                    worker_options=options,
                )
            )
    print_ingest(results)


def run_dispatch(
    args: argparse.Namespace, directory: Path, config: Path, options: list[str]
) -> None:
    bodies = fx.corpus(args.prefill)
    raw = [
        baselines.httpx_loop(bodies, directory, receivers, args.raw_concurrency),
        baselines.http_client_loop(bodies, directory, receivers, args.raw_concurrency),
    ]
    embedded: list[Result] = []
    if not args.skip_embedded:
        settings = Settings(data_dir=directory / "embedded-dispatch", config_dir=config)
        embedded.append(
            dispatch_scenario(
                f"embedded: SQLite, {settings.dispatch_workers} in-process workers",
                settings,
                [fx.renumber(b) for b in bodies],
                directory,
                worker_processes=0,
                worker_options=options,
            )
        )
    postgres: list[Result] = []
    if not args.skip_postgres:
        for count in (1, 2):
            with fx.postgres_database(f"dispatch{count}") as url:
                postgres.append(
                    dispatch_scenario(
                        f"PostgreSQL: {count} renkei worker process{'es' if count > 1 else ''}",
                        _pg_settings(directory / f"pg{count}", config, url),
                        [fx.renumber(b) for b in bodies],
                        directory,
                        worker_processes=count,
                        worker_options=options,
                    )
                )
    print_dispatch(raw, embedded, postgres)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=["all", "ingest", "dispatch"], default="all")
    parser.add_argument("--messages", type=int, default=3000, help="(a): messages ingested")
    parser.add_argument("--prefill", type=int, default=5000, help="(b): messages pre-filled")
    parser.add_argument("--senders", type=int, default=8, help="(a): concurrent ingest threads")
    parser.add_argument("--threads", type=int, default=1, help="worker threads per process")
    parser.add_argument("--batch", type=int, default=50, help="deliveries claimed per round")
    parser.add_argument("--raw-concurrency", type=int, default=8, help="baseline threads")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    options = ["--concurrency", str(args.threads), "--batch", str(args.batch)]
    print(
        f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"httpx {httpx.__version__}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; renkei worker {' '.join(options)}"
    )
    with tempfile.TemporaryDirectory(prefix="renkei-bench-") as tmp:
        directory = Path(tmp)
        config = fx.config_dir(directory, PORTS)
        if args.scenario in ("all", "ingest"):
            run_ingest(args, directory, config, options)
        if args.scenario in ("all", "dispatch"):
            run_dispatch(args, directory, config, options)


if __name__ == "__main__":
    main()
