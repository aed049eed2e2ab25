"""A system's standing ``max_in_flight`` (同時送信数の上限): at most that many of its deliveries
are leased — being sent, or claimed and about to be — at once, by every worker of every
dispatch process together, on SQLite and on PostgreSQL; the other destinations flow on, and a
hub without limits claims exactly as before (not one statement more). A real slow HTTP sink
on 127.0.0.1 counts the requests it is answering at once. docs/dispatch.md (同時送信数の上限),
docs/operations.md (応答の遅い配信先)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event, func, select

from bus.config.index import ConfigIndex
from bus.config.loader import ConfigError, load_config_dir
from bus.config.models import Endpoint, HubConfig, System, Tenant
from bus.config.snapshots import apply_config
from bus.dispatch import claims
from bus.dispatch.claims import claim_jobs
from bus.dispatch.worker import WorkerPool, in_flight_limits
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery
from tests.conftest import SAMPLE_CONFIG_DIR
from tests.support.receivers import wait_for
from tests.test_dispatch import FAST, TENANT, _cli, add_message, states, store  # noqa: F401

LEASE = timedelta(seconds=30)
_ISSUED = re.compile(rb"<env:issuedAt>([^<]+)</env:issuedAt>")
_SUBJECT = re.compile(rb"<env:subject>([^<]+)</env:subject>")


class Sink:
    """A real HTTP server on 127.0.0.1 answering 200 after ``delay`` seconds; it counts the
    requests under way at once (the most it saw) and keeps each subject's issuedAt in the
    order received."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.now = self.most = 0
        self.received: dict[bytes, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()
        self._server = _bind(self._handler())
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def count(self) -> int:
        with self._lock:
            return sum(len(issued) for issued in self.received.values())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    sink.now += 1
                    sink.most = max(sink.most, sink.now)
                time.sleep(sink.delay)
                with sink._lock:
                    sink.now -= 1
                    subject, issued = _SUBJECT.search(body), _ISSUED.search(body)
                    assert subject is not None and issued is not None
                    sink.received[subject.group(1)].append(issued.group(1))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: bodies hold personal data

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _bind(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """On a port the system gives (the samples' 18101–18107 stay free for a running hub)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return server


@pytest.fixture
def sinks() -> Iterator[list[Sink]]:
    started: list[Sink] = []
    yield started
    for sink in started:
        sink.close()


def _config(urls: dict[str, str], limits: dict[str, int]) -> HubConfig:
    return HubConfig(
        tenants=(Tenant(code=TENANT, name="江北町"),),
        systems=tuple(
            System(
                id=name,
                name=name,
                endpoint=Endpoint(transport="http", url=url, timeout_seconds=5),
                retry=FAST,
                max_in_flight=limits.get(name),
            )
            for name, url in urls.items()
        ),
    )


def _fill(hub_store: Store, count: int, subjects: int, destinations: tuple[str, ...]) -> None:
    """``count`` messages over ``subjects`` subjects (several per subject, to keep in order)."""
    for index in range(count):
        add_message(hub_store.sessions, f"S{index % subjects:02d}", destinations)


def _pools(hub_store: Store, config: HubConfig, processes: int) -> list[WorkerPool]:
    """``processes`` pools of 2 workers × 8 lanes, each as a dispatch process of its own."""
    return [
        WorkerPool(
            2,
            hub_store.sessions,
            lambda: config,
            None,
            name=f"host:{9000 + index}",
            poll_seconds=0.02,
            solo_seconds=0.005,  # every lane joins at once: the most concurrency there is
            carry_seconds=0.1,
        )
        for index in range(processes)
    ]


def _deliver_all(
    hub_store: Store, sink: Sink, limits: dict[str, int], processes: int = 1, count: int = 40
) -> None:
    _fill(hub_store, count, 10, ("kokuho",))
    config = _config({"kokuho": sink.url("kokuho")}, limits)
    pools = _pools(hub_store, config, processes)
    for pool in pools:
        pool.start()
    try:
        wait_for(lambda: set(states(hub_store.sessions).values()) == {"delivered"}, timeout=20)
    finally:
        for pool in pools:
            pool.stop()
    assert sink.count == count  # each once
    for subject, issued in sink.received.items():  # in order per subject
        assert issued == sorted(issued), subject


def test_a_limited_destination_never_gets_more_than_its_limit_at_once(
    store: Store,  # noqa: F811
    sinks: list[Sink],
) -> None:
    """max_in_flight 2; 40 messages over 10 subjects; 2 workers × 8 lanes (PostgreSQL: two
    concurrent claimers); a sink answering after 10 ms. It never answers more than 2 at
    once; all 40 arrive once, in order per subject."""
    sink = Sink(delay=0.01)
    sinks.append(sink)
    _deliver_all(store, sink, {"kokuho": 2})
    assert 1 <= sink.most <= 2, sink.most


@pytest.mark.slow
def test_measured_two_dispatch_processes_share_the_limit(
    store: Store,  # noqa: F811
    sinks: list[Sink],
) -> None:
    """The same across two dispatch processes' pools (4 workers × 8 lanes claiming), 120
    messages, a sink answering after 50 ms."""
    sink = Sink(delay=0.05)
    sinks.append(sink)
    _deliver_all(store, sink, {"kokuho": 2}, processes=2, count=120)
    assert 1 <= sink.most <= 2, sink.most


def test_without_a_limit_the_same_destination_gets_more_at_once(
    store: Store,  # noqa: F811
    sinks: list[Sink],
) -> None:
    """The same run with no limit: the sink sees more than 2 at once (so the test above
    would fail without the limit)."""
    sink = Sink(delay=0.02)
    sinks.append(sink)
    _deliver_all(store, sink, {})
    assert sink.most > 2, sink.most


def test_other_destinations_flow_while_a_limited_one_is_saturated(
    store: Store,  # noqa: F811
    sinks: list[Sink],
) -> None:
    """kokuho (max_in_flight 1) answers after 0.4 s and has 12 messages due first; juki
    (no limit) gets 12 too. juki's are all delivered while kokuho still has most of its
    own waiting; kokuho never gets two at once."""
    slow, fast = Sink(delay=0.4), Sink(delay=0.0)
    sinks += [slow, fast]
    for index in range(12):
        add_message(store.sessions, f"K{index:02d}", ("kokuho",))
    for index in range(12):
        add_message(store.sessions, f"J{index:02d}", ("juki",))
    config = _config({"kokuho": slow.url("kokuho"), "juki": fast.url("juki")}, {"kokuho": 1})
    (pool,) = _pools(store, config, 1)
    with pool:
        took = wait_for(lambda: fast.count == 12, timeout=10)
        slow_done = slow.count
    # 0.4 s each, one at a time: about 3 in juki's ~1 s on a quiet machine; half of kokuho's
    # still waiting is the point (a loaded CI machine slows both)
    assert slow_done <= 6, (slow_done, took)
    assert slow.most == 1


@pytest.mark.postgres
def test_postgres_two_claimers_at_once_stay_within_the_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two claimers whose transactions overlap (READ COMMITTED: neither sees the other's
    leases before its commit): the second passes the limited destination by while the first
    holds its lock, instead of taking the same room again. Together they hold 3, not 6; the
    unlimited destination is claimed by both as ever."""
    opened = open_store(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
    try:
        _fill(opened, 20, 20, ("kokuho", "juki"))
        now = datetime.now(UTC)
        limits = {"kokuho": 3}
        with opened.sessions() as first, opened.sessions() as second:
            a = claim_jobs(first, "host:1:0", now, LEASE, 10, limits=limits)
            b = claim_jobs(second, "host:2:0", now, LEASE, 10, limits=limits)
            second.commit()
            first.commit()
        kokuho = [job for job in (*a, *b) if job.destination == "kokuho"]
        assert len(kokuho) == 3, [(j.destination, j.delivery_id) for j in (*a, *b)]
        assert len({job.delivery_id for job in (*a, *b)}) == len(a) + len(b)
        assert _leased(opened, "kokuho", now) == 3
        # once the first has committed, a third claimer counts its leases: no room left
        with opened.sessions() as third:
            c = claim_jobs(third, "host:3:0", now, LEASE, 10, limits=limits)
            third.commit()
        assert {job.destination for job in c} == {"juki"}
        assert len([job for job in (*a, *b, *c) if job.destination == "juki"]) == 20
    finally:
        opened.close()


def _leased(opened: Store, destination: str, now: datetime) -> int:
    with opened.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Delivery.destination == destination,
                    Delivery.state == "pending",
                    Delivery.lease_expires_at > now,
                )
            )
            or 0
        )


def test_a_claim_takes_only_the_room_left_and_keeps_subject_order(
    store: Store,  # noqa: F811
) -> None:
    """Claim by claim (one store, sequential claimers): the room is the limit less the live
    leases; a subject's second message is not claimed while its first is leased; an expired
    lease frees its room."""
    for subject in ("A", "A", "B", "C", "D"):
        add_message(store.sessions, subject, ("kokuho",))
    now = datetime.now(UTC)
    limits = {"kokuho": 2}

    def claim(owner: str, at: datetime = now) -> list[int]:
        with store.sessions() as session:
            jobs = claim_jobs(session, owner, at, LEASE, 50, limits=limits)
            session.commit()
        return [job.delivery_id for job in jobs]

    first = claim("host:1:0")
    assert len(first) == 2
    assert claim("host:2:0") == []  # at its limit
    later = now + LEASE + timedelta(seconds=1)  # the first claimer's leases have expired
    again = claim("host:2:0", later)
    assert sorted(again) == sorted(first)  # the oldest due, A's first (not A's second)


def test_a_claim_that_passes_systems_by_reuses_its_statements(
    store: Store,  # noqa: F811
) -> None:
    """With a limit configured every claim passes the limited system by; its lease statements
    are built once per set of names, not per claim (~5 ms of CPU under the write lock)."""
    for subject in ("A", "B"):
        add_message(store.sessions, subject, ("kokuho", "zeimu"))
    now = datetime.now(UTC)
    built = []
    for _ in range(3):
        with store.sessions() as session:
            claim_jobs(session, "host:1:0", now, LEASE, 50, limits={"kokuho": 1})
            session.rollback()
        built.append(claims._lease_naming.cache_info().misses)
    assert built[1] == built[2] == built[0]  # the first claim built it (or an earlier test)


def _statements(hub_store: Store, limits: dict[str, int] | None) -> list[str]:
    """The statements of one claim of a fresh queue of 20 (juki and zeimu, no backlog)."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    with hub_store.sessions() as session:
        connection = session.connection()
        event.listen(connection.engine, "before_cursor_execute", count)
        try:
            claim_jobs(session, "host:1:0", datetime.now(UTC), LEASE, 50, limits=limits)
        finally:
            event.remove(connection.engine, "before_cursor_execute", count)
        session.rollback()
    return seen


def test_without_limits_a_claim_runs_no_statement_more(
    store: Store,  # noqa: F811
) -> None:
    """The hot path: no system with a limit → the claim is its lease and its message read,
    nothing else (PostgreSQL: and its SET LOCAL); a configuration without max_in_flight
    gives the worker no limits at all."""
    _fill(store, 10, 10, ("juki", "zeimu"))
    dialect = store.engine.dialect.name
    expected = (["SET"] if dialect == "postgresql" else []) + ["UPDATE", "SELECT"]
    assert _statements(store, None) == expected
    assert _statements(store, {}) == expected
    assert in_flight_limits(_config({"juki": "http://127.0.0.1:1/juki"}, {})) == {}
    limited = _statements(store, {"kokuho": 2})  # a limit costs its count
    assert len(limited) > len(expected)


def test_max_in_flight_is_read_from_systems_yaml_and_zero_is_refused(tmp_path: Path) -> None:
    """systems.yaml: ``max_in_flight: 2`` reaches the workers; 0 is a coded problem with
    its file and line (RK-OPS029), as are a negative number and text."""
    directory = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    path = directory / "systems.yaml"
    text = path.read_text(encoding="utf-8")
    marker = "  - id: kokuho\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + "    max_in_flight: 2\n"), encoding="utf-8")
    config = load_config_dir(directory)
    assert in_flight_limits(ConfigIndex(config)) == {"kokuho": 2}
    assert in_flight_limits(config) == {"kokuho": 2}

    path.write_text(text.replace(marker, marker + "    max_in_flight: 0\n"), encoding="utf-8")
    line = text[: text.index(marker)].count("\n") + 2
    with pytest.raises(ConfigError) as raised:
        load_config_dir(directory)
    (problem,) = raised.value.problems
    assert problem.startswith(f"systems.yaml:{line}: max_in_flight: RK-OPS029 "), problem
    assert "同時送信数の上限（max_in_flight）に 0 は使えません" in problem

    for value in (-1, "many"):
        with pytest.raises(ValidationError):
            System(id="kokuho", name="国保", max_in_flight=value)


def test_destinations_list_shows_the_limit_in_force(
    store: Store,  # noqa: F811
    store_settings: Settings,
    tmp_path: Path,
) -> None:
    """``renkei destinations list`` gives each destination's max_in_flight from the
    configuration in force (none: empty, ``null`` in ``--json``)."""
    directory = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    path = directory / "systems.yaml"
    marker = "  - id: kokuho\n"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(marker, marker + "    max_in_flight: 2\n"), encoding="utf-8")
    apply_config(store.sessions, directory)
    add_message(store.sessions, "S1", ("kokuho", "juki"))
    listed = _cli(store_settings, "destinations", "list", "--json")
    assert listed.exit_code == 0, listed.output
    limits = {d["destination"]: d["max_in_flight"] for d in json.loads(listed.stdout)}
    assert limits == {"kokuho": 2, "juki": None}
    table = _cli(store_settings, "destinations", "list")
    assert table.exit_code == 0, table.output
    assert "max in flight" in table.stdout
    (row,) = [line for line in table.stdout.splitlines() if "kokuho" in line]
    assert row.rstrip(" │|").endswith("2"), row
