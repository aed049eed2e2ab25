"""Crash: the hub ingests a fan-out corpus while its dispatch workers are SIGKILLed and
restarted several times. Afterwards every acknowledged message reached every subscriber the
route selects, each receiver applied each message exactly once (resends are allowed and show
up as duplicates), nothing that was not acknowledged was delivered, and each subscriber applied
each subject's messages in ingest order.

* SQLite (the embedded default): ``renkei serve`` (in-process workers) is the process killed;
  this test process ingests into the same SQLite file with a :class:`~bus.hub.Hub`.
* PostgreSQL + RabbitMQ: two ``renkei worker`` processes are killed (one or both at a time).

The receivers are the real recording receiver (one subprocess per subscribing system). The
default run (CI) takes 2,000 messages on SQLite and 1,000 on PostgreSQL, with at least 3 kills
each; ``pytest -m "crash and slow"`` runs 10,000 messages and at least 8 kills
(docs/reliability.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from bus.hub import Hub
from bus.pipeline import Message
from bus.settings import Settings
from bus.store.models import Delivery, DeliveryState, StoredMessage
from tests.support.corpus import CorpusMessage, resident_change_corpus, subscribers_for
from tests.support.receivers import ROOT, Receiver, config_dir_for, free_port

RENKEI = str(Path(sys.executable).parent / "renkei")
SUBSCRIBERS = tuple(sorted(subscribers_for("201")))  # every ResidentChangeNotice subscriber
# Fast back-off, and limits nothing reaches while workers are being killed: no dead letters.
FAST_RETRY = {"max_attempts": 1000, "max_age": "PT1H", "base_delay": "PT0.05S", "max_delay": "PT1S"}
WORKER_LEASE_SECONDS = 2.0  # `renkei worker --lease-seconds`
# `renkei serve`'s in-process workers (RENKEI_DISPATCH_LEASE_SECONDS): a short lease, so the
# deliveries a killed server held are claimed again soon.
SERVE_LEASE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Size:
    messages: int
    subjects: int
    kills: int
    invalid_every: int = 97  # refused messages (never acknowledged, never delivered)
    resend_every: int = 89  # resends of an earlier message (acknowledged as duplicates)


# The default sizes kill while ingesting and while dispatching (the killer runs until ingest
# is over). SQLite ingests fast and its time goes to the kills (each a restart of serve): more
# messages keep work in flight for them. PostgreSQL's time goes to ingest, so half the corpus
# (every subject still with ~25 messages to keep in order) still sees 5-7 kills.
CI = Size(messages=2_000, subjects=40, kills=3)
CI_POSTGRES = Size(messages=1_000, subjects=40, kills=3)
SLOW = Size(messages=10_000, subjects=40, kills=8)


# --- processes ----------------------------------------------------------------------------


class Restartable:
    """A hub process (``renkei serve`` or ``renkei worker``) that can be SIGKILLed and
    started again; each incarnation logs to its own file under ``logs``."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        logs: Path,
        ready: Callable[[Restartable], bool],
    ) -> None:
        self.name, self.command, self.env, self.logs = name, command, env, logs
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        logs.mkdir(parents=True, exist_ok=True)

    @property
    def log(self) -> Path:
        return self.logs / f"{self.name}-{self.incarnation}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        self.incarnation += 1
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self.ready(self):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}: {self.tail()}"
                )
            assert time.monotonic() < deadline, f"{self.name} not ready: {self.tail()}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.tail()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def serve_ready(port: int) -> Callable[[Restartable], bool]:
    def ready(_process: Restartable) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return ready


def worker_ready(process: Restartable) -> bool:
    return process.log.exists() and b"renkei worker:" in process.log.read_bytes()


def clean_env(**values: str) -> dict[str, str]:
    """The parent's environment without any RENKEI_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    return {**env, **values}


@dataclass
class Kill:
    process: str
    at: float  # seconds since the run started
    in_flight: int  # deliveries the killed process held leases on
    delivered: int  # deliveries delivered so far


@dataclass
class Killer:
    """SIGKILLs (and restarts) hub processes every 1–2 s until at least ``kills`` kills have
    happened and ingest is over. Which processes die together is random (seeded)."""

    monitor: Engine
    processes: list[Restartable]
    kills: int
    started: float
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    done: threading.Event = field(default_factory=threading.Event)
    ingest_over: threading.Event = field(default_factory=threading.Event)
    history: list[Kill] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            while len(self.history) < self.kills or not self.ingest_over.is_set():
                if self.done.wait(self.rng.uniform(1.0, 2.0)):
                    return
                count = self.rng.randint(1, len(self.processes))
                victims = self.rng.sample(self.processes, count)
                self.wait_until_busy(victims)
                for victim in victims:
                    pid = victim.pid
                    victim.kill()
                    self.history.append(
                        Kill(
                            victim.name,
                            round(time.monotonic() - self.started, 2),
                            *self.leases_of(pid),
                        )
                    )
                for victim in victims:
                    victim.start()
        except BaseException as error:  # reported by the test thread
            self.error = error

    def wait_until_busy(self, victims: list[Restartable], timeout: float = 3.0) -> None:
        """Aim the kill at a moment a victim holds leases (mid-dispatch), waiting at most
        ``timeout`` (after a kill, the subjects the dead process held wait for its leases to
        expire, so a restarted process may have nothing it can claim for a while)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.done.is_set():
            if any(self.leases_of(victim.pid)[0] for victim in victims):
                return
            time.sleep(0.05)

    def leases_of(self, pid: int) -> tuple[int, int]:
        """(deliveries still leased by the dead process ``pid``, deliveries delivered)."""
        with Session(self.monitor) as session:
            held = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.state == DeliveryState.PENDING.value,
                    Delivery.lease_owner.like(f"%:{pid}:%"),
                )
            )
            delivered = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.state == DeliveryState.DELIVERED.value)
            )
        return int(held or 0), int(delivered or 0)


# --- the scenario -------------------------------------------------------------------------


@dataclass
class Outcome:
    acknowledged: list[CorpusMessage] = field(default_factory=list)
    refused: list[CorpusMessage] = field(default_factory=list)
    resends: int = 0
    problems: list[str] = field(default_factory=list)


def send(hub: Hub, message: CorpusMessage, outcome: Outcome) -> Message:
    """One ingest, as a sender does it: an error (an adapter would answer 5xx) is resent, up
    to 5 times. Every error is recorded as a problem: ingest must not fail under this load."""
    for attempt in range(1, 6):
        try:
            return hub.ingest(message.raw, adapter="test", source_address="127.0.0.1")
        except Exception as error:
            first = str(error).splitlines()[0][:160]
            outcome.problems.append(
                f"ingest of {message.message_id} (attempt {attempt}) raised "
                f"{type(error).__name__}: {first}"
            )
            time.sleep(0.1 * attempt)
    raise AssertionError("\n".join(outcome.problems))


def ingest(hub: Hub, corpus: list[CorpusMessage], size: Size) -> Outcome:
    """Ingest the corpus in order (one sender), resending an earlier message now and then;
    keeps what was acknowledged."""
    outcome = Outcome()
    for message in corpus:
        result = send(hub, message, outcome)
        if result.ack is None:
            outcome.refused.append(message)
            codes = [f.code for f in result.findings]
            if message.valid or "RK-XSD004" not in codes:
                outcome.problems.append(f"{message.message_id} refused: {codes}")
            continue
        outcome.acknowledged.append(message)
        if not message.valid:
            outcome.problems.append(f"{message.message_id} is invalid but was acknowledged")
        if set(result.ack.destinations) != message.subscribers:
            outcome.problems.append(
                f"{message.message_id} ({message.change_reason}) routed to "
                f"{sorted(result.ack.destinations)}, expected {sorted(message.subscribers)}"
            )
        if message.index % size.resend_every == size.resend_every - 1:
            earlier = corpus[message.index // 2]
            again = send(hub, earlier, outcome)
            outcome.resends += 1
            if earlier.valid and (again.ack is None or not again.ack.duplicate):
                outcome.problems.append(f"resend of {earlier.message_id} not a duplicate ack")
    return outcome


def undelivered(monitor: Engine) -> dict[str, int]:
    with Session(monitor) as session:
        rows = session.execute(
            select(Delivery.state, func.count())
            .where(Delivery.state != DeliveryState.DELIVERED.value)
            .group_by(Delivery.state)
        ).all()
    return {str(state): int(count) for state, count in rows}


def wait_delivered(monitor: Engine, expected: int, timeout: float) -> float:
    """Until every delivery is delivered (and there are ``expected`` of them)."""
    start = time.monotonic()
    while True:
        with Session(monitor) as session:
            total = int(session.scalar(select(func.count()).select_from(Delivery)) or 0)
        left = undelivered(monitor)
        if not left and total == expected:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"after {timeout:.0f} s: {total} deliveries (expected {expected}), "
                f"not delivered by state: {left}"
            )
        time.sleep(0.25)


def store_order(monitor: Engine) -> dict[tuple[str, str], list[str]]:
    """messageIds per (destination, subject) in the store's sequence order."""
    order: dict[tuple[str, str], list[str]] = defaultdict(list)
    with Session(monitor) as session:
        rows = session.execute(
            select(Delivery.destination, Delivery.subject_key, StoredMessage.message_id)
            .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
            .order_by(Delivery.destination, Delivery.subject_key, Delivery.sequence)
        ).all()
    for destination, subject, message_id in rows:
        order[(destination, subject)].append(message_id)
    return order


def verify(
    outcome: Outcome,
    corpus: list[CorpusMessage],
    receivers: dict[str, Receiver],
    monitor: Engine,
) -> list[str]:
    """Every problem found (empty when the run is correct)."""
    problems = list(outcome.problems)
    acknowledged = {m.message_id for m in outcome.acknowledged}
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)  # ingest order
    for message in outcome.acknowledged:
        for system in message.subscribers:
            expected[(system, message.subject)].append(message.message_id)
    if store_order(monitor) != expected:
        problems.append("the store's sequences differ from the ingest order")
    never_acknowledged = {m.message_id for m in corpus} - acknowledged
    for system, receiver in receivers.items():
        records = receiver.records()
        applied = [r for r in records if r["applied"]]
        counts = Counter(r["messageId"] for r in applied)
        twice = sorted(m for m, n in counts.items() if n > 1)
        if twice:
            problems.append(f"{system}: applied more than once: {twice[:10]} ({len(twice)})")
        wanted = {m for (s, _), ids in expected.items() if s == system for m in ids}
        missing = sorted(wanted - set(counts))
        if missing:
            problems.append(f"{system}: {len(missing)} not applied, e.g. {missing[:10]}")
        stray = set(counts) - wanted
        if stray & never_acknowledged:
            problems.append(f"{system}: applied unacknowledged {sorted(stray)[:10]}")
        elif stray:
            problems.append(f"{system}: applied messages not routed to it {sorted(stray)[:10]}")
        by_subject: dict[str, list[str]] = defaultdict(list)
        for record in applied:
            by_subject[record["subject"]].append(record["messageId"])
        disordered = [
            subject
            for (s, subject), ids in expected.items()
            if s == system and by_subject.get(subject) != ids
        ]
        if disordered:
            problems.append(f"{system}: subjects applied out of ingest order: {disordered[:5]}")
        if not all(r["in_order"] for r in applied):
            problems.append(f"{system}: the receiver saw an issuedAt go backwards")
    return problems


@dataclass
class Run:
    outcome: Outcome
    kills: list[Kill]
    ingest_seconds: float
    drain_seconds: float
    total_seconds: float
    duplicates: int


def failed_rounds(logs: Path) -> list[str]:
    """The errors of failed dispatch rounds (``worker …: round failed``) in the process logs."""
    found = []
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines):
            if "round failed" in line:
                error = next((e for e in lines[number:] if "Error" in e.split(":")[0]), "?")
                found.append(f"{log.name}: {error[:160]}")
    return found


def crash_run(
    hub: Hub,
    size: Size,
    processes: list[Restartable],
    receivers: dict[str, Receiver],
    lease_seconds: float,
) -> Run:
    """Start the processes, ingest while the killer works, wait until all is delivered, then
    check everything (and fail with every problem found)."""
    corpus = resident_change_corpus(
        size.messages, subjects=size.subjects, seed=size.messages, invalid_every=size.invalid_every
    )
    # Reads for the checks go through a plain engine: no BEGIN IMMEDIATE on SQLite, so
    # watching never takes the write lock from the hub.
    monitor = create_engine(hub.settings.effective_database_url)
    try:
        started = time.monotonic()
        for process in processes:
            process.start()
        killer = Killer(monitor, processes, size.kills, started)
        thread = threading.Thread(target=killer.run, name="killer", daemon=True)
        thread.start()
        try:
            outcome = ingest(hub, corpus, size)
            ingest_seconds = time.monotonic() - started
            killer.ingest_over.set()
            thread.join(size.kills * 15 + 60)
            assert not thread.is_alive(), "the killer did not finish"
            if killer.error is not None:
                raise killer.error
            expected = sum(len(m.subscribers) for m in outcome.acknowledged)
            # Leases held by the last victims expire after lease_seconds; then the rest drains
            # (bounded generously: at least 150 deliveries/s once ingest is over).
            drain = wait_delivered(monitor, expected, timeout=lease_seconds + 30 + expected / 150)
        finally:
            killer.done.set()
            thread.join(30)
            for process in processes:
                process.stop()
        total = time.monotonic() - started
        problems = verify(outcome, corpus, receivers, monitor)
    finally:
        monitor.dispose()
    failed = failed_rounds(processes[0].logs)
    if failed:  # a killed process logs nothing; a live one must not fail its rounds
        problems.append(f"{len(failed)} dispatch rounds failed, e.g. {failed[:3]}")
    duplicates = sum(1 for r in receivers.values() for x in r.records() if x["duplicate"])
    run = Run(outcome, killer.history, ingest_seconds, drain, total, duplicates)
    print(  # shown with -n 0 -s; docs/reliability.md records measured runs
        f"\n{size.messages} messages ({len(outcome.acknowledged)} acknowledged, "
        f"{len(outcome.refused)} refused, {outcome.resends} resends), {expected} deliveries, "
        f"{len(run.kills)} kills ({sum(1 for k in run.kills if k.in_flight)} with "
        f"{sum(k.in_flight for k in run.kills)} deliveries in flight), "
        f"{duplicates} duplicate sends; ingest {ingest_seconds:.1f} s, drain {drain:.1f} s, "
        f"total {total:.1f} s"
    )
    assert not problems, "\n".join(problems)
    return run


def check_the_run_was_a_crash_test(run: Run, size: Size) -> None:
    """Guard against a vacuous pass: kills happened, some caught deliveries in flight, the
    refused messages were refused, and the corpus really fanned out."""
    assert len(run.kills) >= size.kills
    assert sum(k.in_flight for k in run.kills) > 0, f"no kill caught work in flight: {run.kills}"
    assert len(run.outcome.refused) == size.messages // size.invalid_every
    reasons = Counter(len(m.subscribers) for m in run.outcome.acknowledged)
    # kotei and tainou each get a known subset of the change reasons
    assert set(reasons) <= {3, 4, 5} and len(set(reasons)) >= 2, reasons


@pytest.fixture
def subscriber_receivers(tmp_path: Path) -> Iterator[dict[str, Receiver]]:
    started = {name: Receiver(tmp_path, name).start() for name in SUBSCRIBERS}
    yield started
    for receiver in started.values():
        receiver.stop()


def sqlite_crash(tmp_path: Path, receivers: dict[str, Receiver], size: Size) -> None:
    config_dir = config_dir_for(
        tmp_path, {n: r.port for n, r in receivers.items()}, retry=FAST_RETRY
    )
    data_dir = tmp_path / "data"
    hub = Hub.open(
        Settings(
            data_dir=data_dir, database_url=None, broker_url="memory://", config_dir=config_dir
        )
    )
    port = free_port()
    env = clean_env(
        RENKEI_DATA_DIR=str(data_dir),
        RENKEI_CONFIG_DIR=str(config_dir),
        RENKEI_DISPATCH_WORKERS="2",
        RENKEI_DISPATCH_LEASE_SECONDS=str(SERVE_LEASE_SECONDS),
    )
    serve = Restartable(
        "serve",
        [RENKEI, "serve", "--port", str(port)],
        env,
        tmp_path / "logs",
        serve_ready(port),
    )
    try:
        run = crash_run(hub, size, [serve], receivers, SERVE_LEASE_SECONDS)
    finally:
        hub.close()
    check_the_run_was_a_crash_test(run, size)


def postgres_crash(
    tmp_path: Path, receivers: dict[str, Receiver], size: Size, database: str, broker: str
) -> None:
    config_dir = config_dir_for(
        tmp_path, {n: r.port for n, r in receivers.items()}, retry=FAST_RETRY
    )
    data_dir = tmp_path / "data"
    hub = Hub.open(
        Settings(data_dir=data_dir, database_url=database, broker_url=broker, config_dir=config_dir)
    )
    env = clean_env(
        RENKEI_DATA_DIR=str(data_dir),
        RENKEI_CONFIG_DIR=str(config_dir),
        RENKEI_DATABASE_URL=database,
        RENKEI_BROKER_URL=broker,
    )
    command = [RENKEI, "worker", "--concurrency", "2", "--lease-seconds"]
    command += [str(WORKER_LEASE_SECONDS), "--poll-seconds", "0.2"]
    workers = [
        Restartable(f"worker{i}", command, env, tmp_path / "logs", worker_ready) for i in (1, 2)
    ]
    try:
        run = crash_run(hub, size, workers, receivers, WORKER_LEASE_SECONDS)
    finally:
        hub.close()
    check_the_run_was_a_crash_test(run, size)


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.crash
@pytest.mark.ordering
def test_crash_sqlite_serve_killed(
    tmp_path: Path, subscriber_receivers: dict[str, Receiver]
) -> None:
    sqlite_crash(tmp_path, subscriber_receivers, CI)


@pytest.mark.crash
@pytest.mark.ordering
@pytest.mark.postgres
def test_crash_postgres_workers_killed(
    tmp_path: Path, subscriber_receivers: dict[str, Receiver], postgres_url: str, rabbitmq_url: str
) -> None:
    postgres_crash(tmp_path, subscriber_receivers, CI_POSTGRES, postgres_url, rabbitmq_url)


@pytest.mark.crash
@pytest.mark.ordering
@pytest.mark.slow
def test_crash_sqlite_serve_killed_10000(
    tmp_path: Path, subscriber_receivers: dict[str, Receiver]
) -> None:
    sqlite_crash(tmp_path, subscriber_receivers, SLOW)


@pytest.mark.crash
@pytest.mark.ordering
@pytest.mark.postgres
@pytest.mark.slow
def test_crash_postgres_workers_killed_10000(
    tmp_path: Path, subscriber_receivers: dict[str, Receiver], postgres_url: str, rabbitmq_url: str
) -> None:
    postgres_crash(tmp_path, subscriber_receivers, SLOW, postgres_url, rabbitmq_url)
