"""The broker check of ``/readyz`` and ``/metrics`` opens a broker connection each time; it is
reused for ``RENKEI_BROKER_CHECK_SECONDS`` per process (bus/observability/readiness.py). Real
scrapes over HTTP, against the real RabbitMQ through a proxy that counts the connections; the
broker "goes down" when the proxy stops listening (a closed port: RabbitMQ itself is shared)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bus.hub import Hub
from bus.observability import readiness
from bus.observability.readiness import BROKER_CHECK_ENV, broker_check_seconds, check_broker
from bus.observability.routes import operations_router
from bus.settings import Settings
from tests.conftest import SAMPLE_CONFIG_DIR
from tests.support.asgi_thread import served_in_thread
from tests.support.hub_server import ROOT
from tests.support.receivers import free_port, wait_for


class CountingProxy:
    """Listens on a free 127.0.0.1 port and counts the connections it accepts; each is piped
    to ``upstream`` (the real broker), or closed at once when ``upstream`` is None (a peer
    that is no broker). :meth:`close` stops listening: the port then refuses connections."""

    def __init__(self, upstream: tuple[str, int] | None) -> None:
        self.upstream = upstream
        self.count = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.count += 1
            self._sockets.append(client)
            if self.upstream is None:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self._sockets.append(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread; the port is closed
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Clock:
    """``time.monotonic`` for the readiness module, moved on by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(readiness, "time", fake)
    return fake


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One client for the test (``httpx.get`` builds an SSL context each call: ~50 ms)."""
    with httpx.Client(timeout=10) as client:
        yield client


def _broker_gauge(http: httpx.Client, url: str) -> float:
    text = http.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "renkei_readiness_check" and sample.labels["check"] == "broker":
                return float(sample.value)
    raise AssertionError("no renkei_readiness_check{check=broker}")


def test_scrapes_within_the_period_share_one_broker_connection(
    rabbitmq_url: str,
    tmp_path: Path,
    clock: Clock,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 scrapes, 5 ``/readyz`` and 8 concurrent scrapes within one period: one connection
    to the real RabbitMQ (before: one each, 33). The proxy then stops listening: the gauge
    stays 1 until the period is over (documented), then reads 0 at once, and a broker that
    refuses connections costs a scrape no 2 s sleep."""
    monkeypatch.setenv(BROKER_CHECK_ENV, "10")
    proxy = CountingProxy(("127.0.0.1", 5672))
    hub = Hub.open(Settings(data_dir=tmp_path / "data", dispatch_workers=0, broker_url=proxy.url))
    app = FastAPI()
    app.include_router(operations_router())
    app.state.hub = hub
    try:
        with served_in_thread(app) as url:
            before = proxy.count
            assert [_broker_gauge(http, url) for _ in range(20)] == [1.0] * 20
            ready = [http.get(f"{url}/readyz") for _ in range(5)]
            assert [response.status_code for response in ready] == [200] * 5
            answers: list[float] = []
            threads = [
                threading.Thread(target=lambda: answers.append(_broker_gauge(http, url)))
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert answers == [1.0] * 8
            assert proxy.count - before == 1

            proxy.close()  # the broker goes down
            clock.now += 9.9
            assert _broker_gauge(http, url) == 1.0  # within the period: the last result
            clock.now += 0.1
            started = time.perf_counter()
            assert _broker_gauge(http, url) == 0.0  # the period is over: a new check
            assert time.perf_counter() - started < 1.0  # refused: no retry, no 2 s sleep
            body = http.get(f"{url}/readyz").json()
            assert body["checks"]["broker"]["finding"]["code"] == "RK-OPS002"
    finally:
        proxy.close()
        hub.close()


def test_the_period_is_per_broker_and_a_failure_is_kept_as_long(clock: Clock) -> None:
    """Without RabbitMQ: a peer that closes every connection. Ten checks in the period, and
    eight at once from threads, make one connection; the next period one more."""
    proxy = CountingProxy(None)
    try:
        results = [check_broker(proxy.url, timeout=2.0, max_age=5.0) for _ in range(10)]
        assert all(not result.ok for result in results)
        threads = [
            threading.Thread(target=check_broker, args=(proxy.url, 2.0, 5.0)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert proxy.count == 1
        clock.now += 5.0
        assert not check_broker(proxy.url, timeout=2.0, max_age=5.0).ok
        assert proxy.count == 2
        assert check_broker(proxy.url, timeout=2.0, max_age=0).ok is False  # 0: not reused
        assert proxy.count == 3
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 10.0), ("2.5", 2.5), ("0", 0.0), ("-1", 10.0), ("x", 10.0)]
)
def test_the_period_setting(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv(BROKER_CHECK_ENV, value)
    assert broker_check_seconds() == seconds


@pytest.mark.slow
@pytest.mark.services
def test_a_served_hub_opens_one_broker_connection_a_period(
    rabbitmq_url: str, tmp_path: Path, http: httpx.Client
) -> None:
    """The end-to-end version in real time: uvicorn with two HTTP processes, scraped as fast
    as it answers for 5 s with a 2 s period: at most one connection per process and period
    (before: one per scrape); the broker then stops listening and both processes' gauges read
    0 within the period."""
    period = 2.0
    proxy = CountingProxy(("127.0.0.1", 5672))
    port = free_port()
    environment = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
        "RENKEI_BROKER_URL": proxy.url,
        "RENKEI_DISPATCH_WORKERS": "0",
        BROKER_CHECK_ENV: str(period),
    }
    command = [sys.executable, "-m", "uvicorn", "bus.webapp:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=60)
        before = proxy.count
        started = time.monotonic()
        scrapes = 0
        while time.monotonic() - started < 5.0:
            assert _broker_gauge(http, url) == 1.0
            scrapes += 1
        elapsed = time.monotonic() - started
        periods = int(elapsed // period) + 1
        connections = proxy.count - before
        assert scrapes > 4 * periods * 2, scrapes  # enough scrapes to tell
        assert 1 <= connections <= 2 * periods, (connections, scrapes)
        print(f"{scrapes} scrapes in {elapsed:.1f} s: {connections} broker connections")

        proxy.close()
        down = time.monotonic()
        zeros = 0
        while zeros < 10:  # ten zeros in a row: both processes have seen it
            zeros = zeros + 1 if _broker_gauge(http, url) == 0.0 else 0
            assert time.monotonic() - down < period + 2.0
        print(f"broker down: seen by both processes after {time.monotonic() - down:.2f} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        proxy.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
