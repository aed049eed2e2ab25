"""``/metrics`` after real traffic through a real hub (uvicorn, recording receiver), and
``/readyz``: ready with its database, broker and configuration; 503 with a coded reason
when the broker is a closed port. Neither needs a login (no credentials are sent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.catalogue import NS_ENVELOPE
from bus.hub import Hub
from bus.imports.runner import ImportOptions, run_import
from bus.observability.metrics import MULTIPROC_ENV, exposition
from bus.settings import Settings
from tests.support.hub_server import ROOT, hub_server, sample, serialize
from tests.support.receivers import SAMPLE_CONFIG_DIR, answers, free_port, wait_for

SERVICE = "ResidentChangeNotice"
TENANT = "414247"  # the sample's client tenant
XML = {"Content-Type": "application/xml"}
RENKEI = str(Path(sys.executable).parent / "renkei")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(url: str) -> Samples:
    """Every sample of ``/metrics`` by (name, labels)."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return _parse(response.text)


def _parse(text: str) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("renkei_"), family.name
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def _send(url: str, document: bytes) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/messages/{SERVICE}", content=document, headers=XML, timeout=30)


def test_metrics_count_real_traffic_and_read_the_queue_from_the_store(tmp_path: Path) -> None:
    """Stored, duplicate, refused and poisoned messages through a real hub; the hub is then
    also ready (database, broker, configuration)."""
    poison = sample(SERVICE)
    poison_id = poison.findtext(f".//{{{NS_ENVELOPE}}}messageId")
    assert poison_id is not None
    args = ("--fail-message-ids", poison_id)  # the receiver refuses it: 400, dead letter
    with hub_server(tmp_path, receiver_args=args) as hub:
        destinations: list[str] = []
        for _ in range(3):
            answer = _send(hub.url, serialize(sample(SERVICE)))
            assert answer.status_code == 202, answer.text
            destinations += answer.json()["destinations"]
        duplicate = sample(SERVICE)
        assert _send(hub.url, serialize(duplicate)).status_code == 202
        assert _send(hub.url, serialize(duplicate)).json()["duplicate"] is True
        refused = sample(SERVICE, "invalid-RK-DOM002-my-number-check-digit.xml")
        assert _send(hub.url, serialize(refused)).status_code == 422
        poisoned = _send(hub.url, serialize(poison)).json()["destinations"]
        expected_delivered = len(destinations) + len(poisoned)  # the duplicate's first copy

        def settled() -> bool:
            samples = _scrape(hub.url)
            dead = _value(samples, "renkei_deliveries_total", outcome="dead")
            delivered = _value(samples, "renkei_deliveries_total", outcome="delivered")
            return dead == len(poisoned) and delivered == expected_delivered

        wait_for(settled, timeout=60)
        samples = _scrape(hub.url)
        ready = httpx.get(f"{hub.url}/readyz", timeout=10)

    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True},
            "broker": {"ok": True},
            "configuration": {"ok": True},
            "dispatch": {"ok": True},  # the in-process workers beat (bus/dispatch/heartbeat.py)
        },
    }

    received = _value(samples, "renkei_messages_received_total", service=SERVICE, tenant=TENANT)
    assert received == 7
    assert _value(samples, "renkei_messages_stored_total", service=SERVICE, tenant=TENANT) == 5
    assert _value(samples, "renkei_messages_duplicate_total", service=SERVICE) == 1
    assert _value(samples, "renkei_messages_rejected_total", code="RK-DOM002", tenant=TENANT) == 1
    assert _value(samples, "renkei_ingest_duration_seconds_count", adapter="rest") == 7
    # end-to-end latency of every delivered copy; a send duration for every attempt
    assert _value(samples, "renkei_end_to_end_seconds_count", service=SERVICE) == (
        expected_delivered
    )
    attempts = _value(samples, "renkei_deliveries_total")
    assert _value(samples, "renkei_delivery_duration_seconds_count") == attempts
    # the state of the queue, read from the store at scrape time
    assert _value(samples, "renkei_dead_letters", tenant=TENANT) == len(poisoned)
    assert _value(samples, "renkei_queue_depth") == 0
    assert _value(samples, "renkei_config_version") == 1


def test_queue_depth_and_pause_come_from_the_store(tmp_path: Path) -> None:
    """A destination paused by ``renkei destinations pause`` (another process): its
    deliveries wait, and every scrape says so."""
    with hub_server(tmp_path) as hub:
        environment = {
            "RENKEI_DATA_DIR": str(tmp_path / "hub-data"),
            "RENKEI_CONFIG_DIR": str(hub.config_dir),
            "PATH": str(Path(sys.executable).parent),
        }
        subprocess.run(
            [RENKEI, "destinations", "pause", "zeimu", "--reason", "保守"],
            cwd=ROOT,
            env=environment,
            check=True,
            capture_output=True,
        )
        for _ in range(2):
            assert _send(hub.url, serialize(sample(SERVICE))).status_code == 202
        samples = _scrape(hub.url)
        assert _value(samples, "renkei_queue_depth", destination="zeimu", tenant=TENANT) == 2
        assert _value(samples, "renkei_queue_oldest_seconds", destination="zeimu") >= 0
        assert _value(samples, "renkei_destination_paused", destination="zeimu") == 1


def test_readyz_refuses_when_the_broker_is_a_closed_port(tmp_path: Path) -> None:
    closed = free_port()  # bound once and released: nothing listens there
    env = {
        "RENKEI_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed}//",
        "RENKEI_DISPATCH_WORKERS": "0",  # workers would wait for the broker at start
    }
    with hub_server(tmp_path, env=env) as hub:
        ready = httpx.get(f"{hub.url}/readyz", timeout=30)
        alive = httpx.get(f"{hub.url}/healthz", timeout=10)
    assert alive.status_code == 200  # alive, but not to be sent traffic
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"] == {"ok": True}
    assert checks["configuration"] == {"ok": True}
    finding = checks["broker"]["finding"]
    assert finding["code"] == "RK-OPS002"
    assert "メッセージブローカー" in finding["message_ja"]
    assert finding["message_en"].startswith("The message broker cannot be reached")


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.services])]
)
def store_environment(request: pytest.FixtureRequest) -> dict[str, str]:
    """The embedded default (several processes on one SQLite file) or PostgreSQL + RabbitMQ."""
    if request.param == "sqlite":
        return {}
    return {
        "RENKEI_DATABASE_URL": request.getfixturevalue("postgres_url"),
        "RENKEI_BROKER_URL": request.getfixturevalue("rabbitmq_url"),
    }


def test_renkei_serve_adds_up_metrics_across_its_http_processes(
    tmp_path: Path, store_environment: dict[str, str]
) -> None:
    """``renkei serve --http-workers 2`` shares the counters of its processes through a
    multiprocess directory under RENKEI_DATA_DIR: any process answers the scrape with the
    total of both (each message stored once, whichever process took it); both processes log
    JSON."""
    port = free_port()
    data = tmp_path / "data"
    environment = {
        **{k: v for k, v in os.environ.items() if k != MULTIPROC_ENV},
        **store_environment,
        "RENKEI_DATA_DIR": str(data),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
        "RENKEI_DISPATCH_WORKERS": "0",  # ingest only: the sample systems are not running
    }
    command = [RENKEI, "serve", "--port", str(port), "--http-workers", "2", "--no-samples"]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, env=environment, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), timeout=60)
        counted = data / "metrics"
        sent = 0
        with ThreadPoolExecutor(8) as pool:  # until both processes have taken some
            while len(list(counted.glob("counter_*.db"))) < 2 and sent < 400:
                documents = [serialize(sample(SERVICE)) for _ in range(8)]
                assert {a.status_code for a in pool.map(lambda d: _send(url, d), documents)} == {
                    202
                }
                sent += len(documents)
        assert len(list(counted.glob("counter_*.db"))) == 2, f"one process took all {sent}"
        for _ in range(4):  # whichever process answers
            samples = _scrape(url)
            assert _value(samples, "renkei_messages_stored_total", service=SERVICE) == sent
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    started = {line["event"] for line in lines if line["logger"] == "uvicorn.error"}
    assert sum("Started server process" in event for event in started) == 2


def test_import_progress_is_counted_per_committed_chunk(tmp_path: Path) -> None:
    """The trap sample of 登記済通知 (6 new, 1 duplicate, 3 bad lines) through a real hub in
    this process: the records by result and the bytes read."""
    notices = ROOT / "samples" / "notices" / "traps-cp932.csv"
    tenant = "412066"
    before = _parse(exposition().decode())
    hub = Hub.open(Settings(data_dir=tmp_path / "data"))
    try:
        run_import(hub, ImportOptions(notices, tenant))
    finally:
        hub.close()
    after = _parse(exposition().decode())

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("renkei_import_records_total", tenant=tenant, result="new") == 6
    assert grew("renkei_import_records_total", tenant=tenant, result="duplicate") == 1
    assert grew("renkei_import_records_total", tenant=tenant, result="error") == 3
    data = notices.read_bytes()
    assert data.endswith(b"\r\n\x1a")  # every line, then the DOS end-of-file mark
    assert grew("renkei_import_bytes_read_total", tenant=tenant) == len(data) - 1
    batch = grew("renkei_messages_stored_total", service="RegistrationNotice", tenant=tenant)
    assert batch == 6


@pytest.mark.postgres
@pytest.mark.services
def test_a_worker_on_another_host_serves_its_own_metrics(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str
) -> None:
    """``renkei worker --metrics-port``: the store's gauges and the worker's own series,
    without the hub's HTTP application."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if k != MULTIPROC_ENV},
        "RENKEI_DATABASE_URL": postgres_url,
        "RENKEI_BROKER_URL": rabbitmq_url,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
    }
    command = [RENKEI, "worker", "--concurrency", "1", "--metrics-port", str(port)]
    process = subprocess.Popen(command, env=environment, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url, "/metrics"), timeout=60)
        samples = _scrape(url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    assert _value(samples, "renkei_config_version") == 1
