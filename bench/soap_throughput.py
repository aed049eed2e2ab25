"""SOAP throughput (issue 4): a ~3 KB 住民異動通知 over SOAP, content-routed to one subscriber
(a local HTTP sink), driven by wrk, side by side in the same run with

* the floor: a bare ASGI endpoint that only parses and XSD-validates the same body with lxml
  (bench/soap_floor.py), same number of HTTP worker processes (``--http-workers N`` adds the
  embedded hub with N processes on its one SQLite file, and the floor with N);
* Node-RED doing parse + content-based route + forward of the same message
  (bench/nodered_baseline.py).

The hub runs as ``renkei serve --no-samples`` with the embedded default (SQLite + in-process
workers). Sustained means: when wrk ends, the backlog of undelivered deliveries is at most one
second of traffic, and the sink has applied every acknowledged message within 10 s.

    .venv/bin/python bench/soap_throughput.py [--seconds 20] [--connections 50]
        [--only inquiry|notification] [--http-workers N]

Needs wrk (Debian package) and Node-RED (``npm ci`` in bench/nodered); a target whose tool is
missing is reported as not run, with the reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from lxml import etree
from sqlalchemy import func, select

from adapters.soap_out.binding import request_parts
from adapters.soap_out.transport import SoapTransport, _fit_fields, _header_kwargs
from bus.samplegen.messages import MessageSpec, build_message, serialize, to_soap
from bus.samplegen.values import TOWNS
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import Delivery as DeliveryRow
from samples.systems import juki
from tests.support.receivers import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nodered_baseline
import wrk_load
from hub_fixtures import RABBITMQ_URL, postgres_database
from hub_procs import RENKEI, ROOT, CpuMeter, Receiver

ENVELOPE_NS = "urn:renkei:platform:envelope:1"
STANDARD_NS = "urn:renkei:platform:standard:1"
SERVICE = "ResidentChangeNotice"
ROUTED_REASONS = ("201", "202", "203", "301")  # 転出, 死亡, 転居: forwarded to 滞納管理
SINK = "tainou"
PATH = f"/soap/{SERVICE}"


def corpus(count: int) -> list[bytes]:
    """``count`` distinct residents' SOAP 住民異動通知 whose 異動事由 routes them to the sink."""
    bodies = []
    for index in range(count):
        document = build_message(MessageSpec(SERVICE, index, TOWNS[index % len(TOWNS)]))
        reason = document.find(".//{urn:renkei:platform:standard:1}changeReason")
        assert reason is not None
        reason.text = ROUTED_REASONS[index % len(ROUTED_REASONS)]
        bodies.append(serialize(to_soap(document)))
    return bodies


def hub_config(directory: Path, sink_url: str, juki_url: str | None = None) -> Path:
    """samples/config with 住民異動通知 routed only to 滞納管理 (its `when` on 異動事由 kept),
    whose endpoint is the sink."""
    target = directory / "config"
    shutil.copytree(ROOT / "samples" / "config", target)
    systems_path = target / "systems.yaml"
    systems = yaml.safe_load(systems_path.read_text(encoding="utf-8"))
    for system in systems["systems"]:
        if system["id"] == SINK:
            system["endpoint"] = {"transport": "http", "url": sink_url, "timeout_seconds": 10}
        if system["id"] == "juki" and juki_url:
            system["endpoint"]["url"] = juki_url
    systems_path.write_text(yaml.safe_dump(systems, allow_unicode=True), encoding="utf-8")
    routes_path = target / "routes.yaml"
    routes = yaml.safe_load(routes_path.read_text(encoding="utf-8"))
    for route in routes["routes"]:
        if route["service"] == SERVICE:
            route["subscribers"] = [s for s in route["subscribers"] if s["system"] == SINK]
    routes_path.write_text(yaml.safe_dump(routes, allow_unicode=True), encoding="utf-8")
    return target


def wait_until_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {seconds} s")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    children = [int(p) for p in found.stdout.split()]
    return [pid, *[grand for child in children for grand in process_tree(child)]]


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


@dataclass
class Row:
    name: str
    result: wrk_load.WrkResult | None = None
    cpu: dict[str, float] | None = None
    note: str = ""

    def cells(self, floor: Row | None, nodered: Row | None) -> list[str]:
        if self.result is None:
            return [self.name, "not run", "", "", "", "", "", self.note]
        rate = self.result.per_second

        def ratio(other: Row | None) -> str:
            if other is None or other.result is None or other is self:
                return ""
            return f"{rate / other.result.per_second:.2f}×"

        cpu = self.cpu or {}
        cpu_ms = " / ".join(
            f"{name} {1000 * v / max(self.result.acknowledged, 1):.2f}" for name, v in cpu.items()
        )
        return [
            self.name,
            f"{rate:,.0f}",
            f"{self.result.p50_ms:.1f} / {self.result.p99_ms:.1f}",
            str(self.result.status_errors + self.result.socket_errors),
            ratio(floor),
            ratio(nodered),
            cpu_ms,
            self.note,
        ]


def measure(
    name: str,
    url: str,
    script: Path,
    options: argparse.Namespace,
    groups: dict[str, list[int]],
) -> Row:
    """A short warm-up, then the measured wrk run with CPU per component."""
    wrk_load.run_wrk(url, script, seconds=3, connections=options.connections)
    meter = CpuMeter(groups)
    meter.start()
    before = children_cpu()
    result, _ = wrk_load.run_wrk(
        url, script, seconds=options.seconds, connections=options.connections
    )
    cpu = meter.stop()
    cpu["wrk"] = children_cpu() - before
    return Row(name, result, cpu)


def deliveries(data_dir: Path, database_url: str | None = None) -> tuple[int, int]:
    """(pending, all) deliveries in the hub's store."""
    store = open_store(Settings(data_dir=data_dir, database_url=database_url))
    try:
        with store.sessions() as session:
            rows = session.execute(
                select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state)
            )
            counts = {state: int(count) for state, count in rows}
    finally:
        store.close()
    return counts.get("pending", 0), sum(counts.values())


@contextmanager
def running_hub(
    work: Path,
    config: Path,
    database_url: str | None = None,
    http_workers: int = 1,
    serve_options: tuple[str, ...] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``renkei serve --no-samples`` on a free port: (process, base URL). The embedded default,
    or ``http_workers`` processes on PostgreSQL + RabbitMQ when ``database_url`` is given."""
    port = free_port()
    environment = os.environ | {
        "RENKEI_DATA_DIR": str(work / "hub-data"),
        "RENKEI_CONFIG_DIR": str(config),
    }
    if database_url is not None:
        environment |= {"RENKEI_DATABASE_URL": database_url, "RENKEI_BROKER_URL": RABBITMQ_URL}
    command = [str(RENKEI), "serve", "--no-samples", "--port", str(port)]
    command += ["--http-workers", str(http_workers), *serve_options]
    hub = subprocess.Popen(command, env=environment, cwd=work, stdout=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        yield hub, f"http://127.0.0.1:{port}"
    finally:
        hub.terminate()
        hub.wait(30)


def run_hub(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    return _run_hub(work, bodies, options, "renkei (embedded, 1 HTTP process)")


def run_hub_dispatch_process(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    """One HTTP process with its dispatch workers in a process of their own."""
    label = "renkei (embedded, 1 HTTP process + 1 dispatch process)"
    return _run_hub(work, bodies, options, label, serve_options=("--dispatch-processes", "1"))


def run_hub_multi(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    """The embedded default with ``--http-workers`` processes on the one SQLite file (and, by
    default, one dispatch process beside them)."""
    label = f"renkei (embedded, {options.http_workers} HTTP processes + 1 dispatch process)"
    return _run_hub(work, bodies, options, label, None, options.http_workers)


def run_hub_scaled(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    """The same on PostgreSQL + RabbitMQ with ``--scale-out`` HTTP processes (each with its
    in-process dispatch workers), a fresh database."""
    label = f"renkei (PostgreSQL + RabbitMQ, {options.scale_out} HTTP processes)"
    with postgres_database("soap") as url:
        return _run_hub(work, bodies, options, label, url, options.scale_out)


def _run_hub(
    work: Path,
    bodies: list[bytes],
    options: argparse.Namespace,
    label: str,
    database_url: str | None = None,
    http_workers: int = 1,
    serve_options: tuple[str, ...] = (),
) -> Row:
    sink = Receiver(work, SINK, free_port()).start()
    try:
        config = hub_config(work, sink.url)
        serving = running_hub(work, config, database_url, http_workers, serve_options)
        with serving as (hub, base):
            script = wrk_load.write_script(work, bodies, run=1)
            groups = {"hub": process_tree(hub.pid), "sink": [sink.pid]}
            row = measure(label, base + PATH, script, options, groups)
            assert row.result is not None
            backlog, stored = deliveries(work / "hub-data", database_url)
            deadline = time.monotonic() + 10  # every stored delivery is an acknowledged message's
            while sink.applied() < stored and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        sink.stop()
    rate = row.result.per_second
    drained = sink.applied() >= stored
    sustained = backlog <= rate and drained
    row.note = (
        f"backlog at end {backlog} ({backlog / max(rate, 1):.2f} s of traffic); "
        f"{'all delivered' if drained else 'NOT all delivered'} within 10 s → "
        f"{'sustained' if sustained else 'NOT sustained'}"
    )
    return row


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def run_soak(
    work: Path,
    bodies: list[bytes],
    minutes: int,
    rate: float,
    http_workers: int = 1,
    serve_options: tuple[str, ...] = (),
) -> None:
    """``minutes`` one-minute wrk runs at ``rate`` msg/s (10 paced connections): RSS of the
    hub (all its processes) and p99 per minute."""
    connections = 10
    sink = Receiver(work, SINK, free_port()).start()
    try:
        config = hub_config(work, sink.url)
        serving = running_hub(work, config, None, http_workers, serve_options)
        with serving as (hub, base):
            script = paced_script(work, bodies, base + PATH, connections, rate)
            print(
                f"soak: {minutes} min at ≤ {rate:.0f} msg/s ({connections} paced connections, "
                f"{http_workers} HTTP process{'es' if http_workers > 1 else ''} "
                f"{' '.join(serve_options)})"
            )
            print("| minute | msg/s | p50 ms | p99 ms | errors | hub RSS MiB |")
            print("| --- | --- | --- | --- | --- | --- |")
            rss = []
            for minute in range(1, minutes + 1):
                result, _ = wrk_load.run_wrk(base + PATH, script, seconds=60, connections=10)
                rss.append(rss_kib(process_tree(hub.pid)))
                errors = result.status_errors + result.socket_errors
                print(
                    f"| {minute} | {result.per_second:.0f} | {result.p50_ms:.1f} | "
                    f"{result.p99_ms:.1f} | {errors} | {rss[-1] / 1024:.1f} |",
                    flush=True,
                )
            growth = (rss[-1] - rss[0]) / rss[0]
            print(f"RSS growth after minute 1: {100 * growth:+.1f} % (target < 10 %)")
    finally:
        sink.stop()


def paced_script(work: Path, bodies: list[bytes], url: str, connections: int, rate: float) -> Path:
    """A wrk script whose ``connections`` send ``rate`` msg/s in all. wrk waits its delay
    *before* each request, so a connection's cycle is delay + latency: a 15 s run at the
    nominal delay measures the latency under that load, and the delay is shortened by it."""
    nominal = connections * 1000 / rate
    probe = wrk_load.write_script(work, bodies, run=7, delay_ms=nominal)
    result, _ = wrk_load.run_wrk(url, probe, seconds=15, connections=connections)
    latency_ms = max(0.0, connections * 1000 / max(result.per_second, 1) - nominal)
    delay = max(1.0, nominal - latency_ms)
    print(f"pacing: {result.per_second:.0f} msg/s at {nominal:.0f} ms delay -> {delay:.0f} ms")
    return wrk_load.write_script(work, bodies, run=6, delay_ms=delay)


def run_floor(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    return _run_floor(work, bodies, options, 1)


def run_floor_multi(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    return _run_floor(work, bodies, options, options.http_workers)


def _run_floor(work: Path, bodies: list[bytes], options: argparse.Namespace, processes: int) -> Row:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "soap_floor:app", "--port"]
    command += [str(port), "--log-level", "warning", "--no-access-log"]
    command += ["--workers", str(processes)]
    floor = subprocess.Popen(command, cwd=Path(__file__).resolve().parent)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/")
        script = wrk_load.write_script(work, bodies, run=2)
        groups = {"floor": process_tree(floor.pid)}
        url = f"http://127.0.0.1:{port}{PATH}"
        plural = "es" if processes > 1 else ""
        label = f"floor: lxml parse + XSD ({processes} process{plural})"
        return measure(label, url, script, options, groups)
    finally:
        floor.terminate()
        floor.wait(30)


def run_nodered(work: Path, bodies: list[bytes], options: argparse.Namespace) -> Row:
    sink = Receiver(work, "nodered-sink", free_port()).start()
    red = nodered_baseline.NodeRed(work / "node-red", free_port(), PATH, sink.url).start()
    try:
        script = wrk_load.write_script(work, bodies, run=3)
        groups = {"node-red": [red.pid], "sink": [sink.pid]}
        row = measure("Node-RED: parse + route + forward", red.url, script, options, groups)
        assert row.result is not None
        row.note = f"sink applied {sink.applied()} (forwarded synchronously)"
        return row
    finally:
        red.stop()
        sink.stop()


def inquiry_bodies() -> list[etree._Element]:
    """宛名照会 from 滞納管理 for each resident the 住民記録 sample holds."""
    bodies: list[etree._Element] = []
    for town, addressee, *_ in juki.SEED_RESIDENTS:
        document = build_message(MessageSpec("AddresseeInquiry", len(bodies), TOWNS[0]))
        client = document.find(f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}client")
        assert client is not None
        client.find(f"{{{ENVELOPE_NS}}}tenant").text = town  # type: ignore[union-attr]
        client.find(f"{{{ENVELOPE_NS}}}system").text = "tainou"  # type: ignore[union-attr]
        query = document.find(".//{urn:renkei:platform:service:1}AddresseeInquiry")
        assert query is not None
        for child in list(query)[1:]:
            query.remove(child)
        etree.SubElement(query, f"{{{STANDARD_NS}}}addresseeNumber").text = addressee
        bodies.append(document)
    return bodies


def vendor_request(platform_body: bytes, url: str) -> bytes:
    """The request the hub's SOAP transport sends the system for ``platform_body`` (zeep,
    from the system's own WSDL) — what a direct caller would send."""
    request = request_parts(platform_body)
    client = SoapTransport()._contract(url, 10).client  # the transport's own zeep client
    operation = client.service._binding.get(request.service)
    fields = _fit_fields(request.fields, operation.input.body.type.elements)
    headers = _header_kwargs(operation, request.header) or None
    service = client.service
    envelope = client.create_message(service, request.service, **fields, _soapheaders=headers)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def run_inquiry(work: Path, options: argparse.Namespace) -> tuple[list[Row], Row]:
    """宛名照会 answered by the 住民記録 sample (spyne, its own process): called directly
    with its own request, and through the hub's /soap/AddresseeInquiry — one HTTP process,
    then ``--http-workers`` processes when more than one (each a fresh hub)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/juki"
    command = [sys.executable, str(Path(__file__).resolve().parent / "sample_system.py")]
    juki_process = subprocess.Popen(
        [*command, "juki", url, str(work / "juki")], stdout=subprocess.PIPE, text=True
    )
    assert juki_process.stdout is not None
    assert "listening" in juki_process.stdout.readline()
    try:
        documents = inquiry_bodies()
        requests = [vendor_request(serialize(document), url) for document in documents]
        direct_script = wrk_load.write_script(work, requests, run=4, unique_ids=False)
        direct = measure(
            "住民記録 sample called directly",
            url,
            direct_script,
            options,
            {"juki": [juki_process.pid]},
        )
        bodies = [serialize(to_soap(document)) for document in documents]
        through: list[Row] = []
        for processes in sorted({1, options.http_workers}):
            hub_work = work / f"hub-{processes}"
            hub_work.mkdir()
            config = hub_config(hub_work, "http://127.0.0.1:9/unused", juki_url=url)
            with running_hub(hub_work, config, http_workers=processes) as (hub, base):
                script = wrk_load.write_script(hub_work, bodies, run=5)
                groups = {"hub": process_tree(hub.pid), "juki": [juki_process.pid]}
                hub_url = base + "/soap/AddresseeInquiry"
                plural = "es" if processes > 1 else ""
                label = f"宛名照会 through the hub ({processes} HTTP process{plural})"
                through.append(measure(label, hub_url, script, options, groups))
        return through, direct
    finally:
        juki_process.terminate()
        juki_process.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=500, help="distinct residents")
    parser.add_argument("--soak-minutes", type=int, default=0, help="then a soak this long")
    parser.add_argument("--soak-rate", type=float, help="soak msg/s (default: half the hub's)")
    parser.add_argument("--soak-only", action="store_true", help="only the soak")
    parser.add_argument(
        "--only",
        choices=("inquiry", "notification"),
        help="only the 宛名照会 rows, or only the notification rows (default: both)",
    )
    parser.add_argument(
        "--scale-out", type=int, default=0, help="also N HTTP processes on PostgreSQL + RabbitMQ"
    )
    parser.add_argument(
        "--http-workers",
        type=int,
        default=1,
        help="also the embedded hub and the floor with N HTTP processes (N > 1), and the "
        "inquiry through a hub with N; with --soak-only, the soaked hub runs N",
    )
    parser.add_argument(
        "--dispatch-processes",
        type=int,
        help="with --soak-only, the soaked hub's --dispatch-processes (default: serve's)",
    )
    options = parser.parse_args(argv)
    missing = wrk_load.available()
    if missing:
        raise SystemExit(missing)
    bodies = corpus(options.distinct)
    print(f"{len(bodies)} distinct bodies, {sum(map(len, bodies)) // len(bodies)} bytes on average")
    runs: list[tuple[str, Callable[[Path, list[bytes], argparse.Namespace], Row]]] = [
        ("floor", run_floor),
        ("nodered", run_nodered),
        ("hub", run_hub),
        ("hub_d", run_hub_dispatch_process),
    ]
    if options.http_workers > 1:
        runs += [("floor_n", run_floor_multi), ("hub_n", run_hub_multi)]
    if options.scale_out:
        runs.append(("scaled", run_hub_scaled))
    if options.soak_only:
        with tempfile.TemporaryDirectory(prefix="renkei-soak-") as temporary:
            minutes = options.soak_minutes or 10
            rate = options.soak_rate or 150
            layout = options.dispatch_processes
            serve_options = () if layout is None else ("--dispatch-processes", str(layout))
            run_soak(Path(temporary), bodies, minutes, rate, options.http_workers, serve_options)
        return
    rows: dict[str, Row] = {}
    inquiry: tuple[list[Row], Row] | None = None
    with tempfile.TemporaryDirectory(prefix="renkei-soap-bench-") as temporary:
        for key, run in [] if options.only == "inquiry" else runs:
            if key == "nodered" and (reason := nodered_baseline.NodeRed.available()):
                rows[key] = Row("Node-RED", note=reason)
                continue
            work = Path(temporary) / key
            work.mkdir()
            rows[key] = run(work, bodies, options)
        if options.only != "notification":
            inquiry_work = Path(temporary) / "inquiry"
            inquiry_work.mkdir()
            inquiry = run_inquiry(inquiry_work, options)
    if rows:
        print_notification_table(rows)
    if inquiry is not None:
        print_inquiry_table(*inquiry)
    print(
        f"wrk: {options.connections} connections, 2 threads, "
        f"{options.seconds} s after a 3 s warm-up"
    )
    hub_result = rows["hub"].result if "hub" in rows else None
    if options.soak_minutes and hub_result is not None:
        rate = options.soak_rate or hub_result.per_second / 2
        with tempfile.TemporaryDirectory(prefix="renkei-soak-") as temporary:
            run_soak(Path(temporary), bodies, options.soak_minutes, rate)


def print_notification_table(rows: dict[str, Row]) -> None:
    header = [
        "target",
        "msg/s",
        "p50 / p99 ms",
        "errors",
        "vs floor",
        "vs Node-RED",
        "CPU ms per message",
        "notes",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for key in ("hub", "hub_d", "hub_n", "scaled", "floor", "floor_n", "nodered"):
        if key not in rows:
            continue
        # each hub against the floor with its own number of HTTP processes
        floor = rows.get("floor_n" if key == "hub_n" else "floor")
        print("| " + " | ".join(rows[key].cells(floor, rows.get("nodered"))) + " |")
    print()


def print_inquiry_table(through: list[Row], direct: Row) -> None:
    print(
        "| inquiry | msg/s | p50 / p99 ms | errors | vs direct | p50 added | CPU ms per message |"
    )
    print("|" + " --- |" * 7)
    for row in (*through, direct):
        assert row.result is not None and direct.result is not None
        cells = row.cells(None, None)
        ratio = row.result.per_second / direct.result.per_second
        added = row.result.p50_ms - direct.result.p50_ms
        print(f"| {' | '.join(cells[:4])} | {ratio:.2f}× | {added:+.1f} ms | {cells[6]} |")


if __name__ == "__main__":
    main()
