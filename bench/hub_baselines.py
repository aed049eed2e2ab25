"""Raw HTTP baselines for the hub benchmark: the same bodies POSTed to the same receivers
(fresh logs) with the same headers, without the hub — what the receivers can take."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import hub_fixtures as fx
import hub_procs as procs
from hub_report import Result

Job = tuple[bytes, procs.Receiver]
Receivers = Callable[[Path], AbstractContextManager[list[procs.Receiver]]]


def _headers(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/xml; charset=utf-8",
        "Renkei-Message-Id": fx.header_value(body, "messageId"),
        "Renkei-Service": fx.SERVICE,
        "Renkei-Tenant": fx.header_value(body, "tenant"),
    }


def _run(
    label: str,
    bodies: Sequence[bytes],
    directory: Path,
    receivers: Receivers,
    concurrency: int,
    make_post: Callable[[], Callable[[Job], None]],
) -> Result:
    with receivers(directory) as started:
        jobs = [(body, r) for body in bodies for r in started]
        post = make_post()
        post(jobs[0])  # connections up, caches warm
        meter = procs.CpuMeter(
            {f"bench process ({label})": [os.getpid()], "receivers": [r.pid for r in started]}
        )
        meter.start()
        start = time.monotonic()
        with ThreadPoolExecutor(concurrency) as executor:
            list(executor.map(post, jobs[1:]))
        end = time.monotonic()
        cpu = meter.stop()
    return Result(
        f"raw {label} loop, {concurrency} threads",
        end - start,
        len(bodies),
        len(jobs) - 1,
        None,
        cpu,
    )


def httpx_loop(
    bodies: Sequence[bytes], directory: Path, receivers: Receivers, concurrency: int
) -> Result:
    """A plain httpx loop: ``concurrency`` threads sharing one client (its connection pool)."""
    client = httpx.Client(limits=httpx.Limits(max_connections=64))

    def make_post() -> Callable[[Job], None]:
        def post(job: Job) -> None:
            body, receiver = job
            response = client.post(receiver.url, content=body, headers=_headers(body))
            assert response.status_code == 200

        return post

    try:
        return _run("httpx", bodies, directory, receivers, concurrency, make_post)
    finally:
        client.close()


def http_client_loop(
    bodies: Sequence[bytes], directory: Path, receivers: Receivers, concurrency: int
) -> Result:
    """A plain http.client loop: a keep-alive connection per thread and receiver (the same
    connection pattern as the hub's transport)."""
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []

    def make_post() -> Callable[[Job], None]:
        def post(job: Job) -> None:
            body, receiver = job
            mine: dict[int, http.client.HTTPConnection] = local.__dict__.setdefault("c", {})
            connection = mine.get(receiver.port)
            if connection is None:
                connection = mine[receiver.port] = http.client.HTTPConnection(
                    "127.0.0.1", receiver.port, timeout=10
                )
                opened.append(connection)
            connection.request("POST", f"/{receiver.name}", body, _headers(body))
            response = connection.getresponse()
            response.read()
            assert response.status == 200

        return post

    try:
        return _run("http.client", bodies, directory, receivers, concurrency, make_post)
    finally:
        for connection in opened:
            connection.close()
