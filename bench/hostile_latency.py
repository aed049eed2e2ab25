"""Hostile input refused fast while the hub is under load (issue 7: < 10 ms p99).

``renkei serve`` (embedded default: one uvicorn process, SQLite, in-process workers) with
three recording receivers as subscribers. Three phases in one run:

1. baseline: the hostile set, one request at a time, against the idle hub;
2. load: ``--load-threads`` threads post valid 住民異動通知 to REST as fast as the hub takes
   them (stored, fanned out, delivered: ingest, SQLite commits and dispatch all busy), while
   the hostile set is replayed one request at a time and each refusal timed;
3. the same hostile timings compared with the valid requests' own latency under that load,
   and with the refusal itself (``secure_parse`` in process, no HTTP) as the floor.

Each hostile request must be refused with a coded finding (SOAP Fault or problem+json with an
RK- code); anything else is counted as a failure. Latency is measured at the client (request
written → last byte read, one persistent connection per thread), so it includes the HTTP
stack. The machine is shared (2 cores, other engineers' jobs): the report prints the load
average next to the numbers.

``--load wrk`` sends the same load with wrk (C, its own process) instead of Python threads in
this process, whose GIL would otherwise also delay the timed hostile requests' client side.

Run: ``.venv/bin/python bench/hostile_latency.py --seconds 30 --load-threads 4 [--load wrk]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import hub_procs as procs
import wrk_load
import yaml
from hub_fixtures import SUBSCRIBERS, config_dir, corpus
from soap_throughput import running_hub

from bus.validation.secure_parse import secure_parse
from tests.support.receivers import free_port

HOSTILE: dict[str, bytes] = {
    "billion-laughs": b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>""",
    "xxe-file": b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<r>&x;</r>""",
    "xxe-network": b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM
"http://127.0.0.1:9/x">]><r>&x;</r>""",
    "deep-nesting": b"<a>" * 5000 + b"</a>" * 5000,
    "utf16-declared": b"<?xml version='1.0' encoding='UTF-16'?><r/>",
    "nul-byte": b"<r>\x00</r>",
    "not-xml": b"\x89PNG\r\n\x1a\n" + os.urandom(512),
    "huge-attribute": b"<r a='" + b"A" * 2_000_000 + b"'/>",
    "many-attributes": b"<r " + b" ".join(b"a%d='x'" % i for i in range(20000)) + b"/>",
    "wrong-root": b"<?xml version='1.0'?><html><body>hello</body></html>",
}
SERVICE = "ResidentChangeNotice"
REST = f"/api/v1/messages/{SERVICE}"
SOAP = f"/soap/{SERVICE}"


def _refused(response: httpx.Response) -> bool:
    return response.status_code >= 400 and b"RK-" in response.content


Timings = dict[str, list[float]]  # hostile input name → latencies (s)


def hostile_round(client: httpx.Client, base: str, rounds: int, into: Timings) -> int:
    """Each hostile input through REST and SOAP ``rounds`` times, timed into ``into``; the
    number not refused with a coded finding."""
    failures = 0
    for _ in range(rounds):
        for name, body in HOSTILE.items():
            for path, media in ((REST, "application/xml"), (SOAP, "text/xml; charset=utf-8")):
                start = time.perf_counter()
                response = client.post(base + path, content=body, headers={"Content-Type": media})
                into.setdefault(name, []).append(time.perf_counter() - start)
                failures += not _refused(response)
    return failures


def flat(timings: Timings) -> list[float]:
    return [value for values in timings.values() for value in values]


def http_subscribers(config: Path) -> None:
    """The recording receivers speak plain HTTP (zeimu is a SOAP system in the samples)."""
    path = config / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        if system["id"] in SUBSCRIBERS:
            system["endpoint"]["transport"] = "http"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")


def parse_floor(rounds: int) -> Timings:
    """The refusal itself, in this process: :func:`secure_parse` of each hostile input (no
    HTTP, no pipeline, no audit) — the floor under the HTTP figures."""
    timings: Timings = {}
    for _ in range(rounds):
        for name, body in HOSTILE.items():
            start = time.perf_counter()
            secure_parse(body)
            timings.setdefault(name, []).append(time.perf_counter() - start)
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def describe(name: str, latencies: list[float]) -> str:
    ms = [value * 1000 for value in latencies]
    return (
        f"{name:<34} n={len(ms):>6}  p50={percentile(ms, 0.5):7.2f} ms  "
        f"p99={percentile(ms, 0.99):7.2f} ms  max={max(ms):7.2f} ms  "
        f"mean={statistics.fmean(ms):7.2f} ms"
    )


class Load:
    """Threads posting valid notices to REST until stopped; their latencies and count."""

    def __init__(self, base: str, threads: int, bodies: list[bytes]) -> None:
        self.base, self.bodies = base, bodies
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.accepted = self.failed = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            position = index
            while not self.stop.is_set():
                body = self.bodies[position % len(self.bodies)]
                position += len(self.threads)
                start = time.perf_counter()
                response = client.post(
                    self.base + REST, content=body, headers={"Content-Type": "application/xml"}
                )
                elapsed = time.perf_counter() - start
                with self._lock:
                    self.latencies.append(elapsed)
                    if response.status_code == 202:
                        self.accepted += 1
                    else:
                        self.failed += 1

    @contextmanager
    def running(self) -> Iterator[None]:
        for thread in self.threads:
            thread.start()
        try:
            yield
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(120)

    def summary(self, seconds: float) -> str:
        return (
            describe("valid notices (the load itself)", self.latencies)
            + f" accepted={self.accepted} other={self.failed} (~{self.accepted / seconds:.0f}/s)"
        )


class WrkLoad:
    """The same load from wrk, one connection per ``threads``, for ``seconds``."""

    def __init__(self, base: str, threads: int, bodies: list[bytes], work: Path) -> None:
        self.url, self.connections = base + REST, threads
        self.script = wrk_load.write_script(work, bodies, run=7)
        self.result: wrk_load.WrkResult | None = None

    @contextmanager
    def running(self, seconds: int) -> Iterator[None]:
        def run() -> None:
            self.result, _ = wrk_load.run_wrk(
                self.url, self.script, seconds=seconds, connections=self.connections
            )

        thread = threading.Thread(target=run)
        thread.start()
        try:
            yield
        finally:
            thread.join(seconds + 120)

    def summary(self, seconds: float) -> str:
        assert self.result is not None
        result = self.result
        return (
            f"{'valid notices (wrk, the load itself)':<34} n={result.requests:>6}  "
            f"p50={result.p50_ms:7.2f} ms  p99={result.p99_ms:7.2f} ms  "
            f"errors={result.status_errors + result.socket_errors} "
            f"(~{result.per_second:.0f}/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="hostile phase under load")
    parser.add_argument("--load-threads", type=int, default=4)
    parser.add_argument("--baseline-rounds", type=int, default=20)
    parser.add_argument("--load", choices=("threads", "wrk"), default="threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="renkei-hostile-") as name:
        work = Path(name)
        receivers = [procs.Receiver(work, s, free_port()).start() for s in SUBSCRIBERS]
        try:
            config = config_dir(work, {r.name: r.port for r in receivers})
            http_subscribers(config)
            bodies = corpus(20000, distinct=500)
            with running_hub(work, config) as (_hub, base), httpx.Client(timeout=60) as client:
                hostile_round(client, base, 2, {})  # warm-up (schemas, connections)
                baseline: Timings = {}
                baseline_failures = hostile_round(client, base, args.baseline_rounds, baseline)
                load: Load | WrkLoad
                if args.load == "wrk":
                    load = WrkLoad(base, args.load_threads, bodies, work)
                    running = load.running(round(args.seconds) + 3)
                else:
                    load = Load(base, args.load_threads, bodies)
                    running = load.running()
                loaded: Timings = {}
                loaded_failures = 0
                with running:
                    time.sleep(2)  # let the load settle
                    deadline = time.monotonic() + args.seconds
                    while time.monotonic() < deadline:
                        loaded_failures += hostile_round(client, base, 1, loaded)
        finally:
            for receiver in receivers:
                receiver.stop()
    print(f"load average (1/5/15 min): {os.getloadavg()}; cores: {os.cpu_count()} (shared)")
    floor = flat(parse_floor(args.baseline_rounds * 2))
    idle, busy = flat(baseline), flat(loaded)
    print(describe("secure_parse alone, in process", floor))
    print(describe("hostile, idle hub (baseline)", idle), f"not refused={baseline_failures}")
    print(describe("hostile, hub under load", busy), f"not refused={loaded_failures}")
    print(load.summary(args.seconds + 2))
    print(f"p99 under load / p99 idle = {percentile(busy, 0.99) / percentile(idle, 0.99):.2f}")
    for name, body in HOSTILE.items():
        print(describe(f"  idle: {name} ({len(body)} B)", baseline[name]))
    for name, body in HOSTILE.items():
        print(describe(f"  under load: {name} ({len(body)} B)", loaded[name]))


if __name__ == "__main__":
    main()
