"""Starts the sample systems in this process, each on its configured address.

``renkei serve`` calls :func:`start` through the ``renkei.samples`` entry point with the
endpoint URL of every configured system; the systems known here (juki, zeimu, kotei over
SOAP; shuno, kokuho, tainou, houmu over REST) are started on their URL's host, port and path,
if the host is this machine. Standalone::

    python -m samples.systems.launcher --data-dir .renkei/samples

starts them on the sample configuration's ports (18101–18107).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import uvicorn

from samples.systems import juki, kotei, tainou, zeimu
from samples.systems.rest_systems import REST_SYSTEMS, create_app
from samples.systems.soap_vendor import SoapSystem

log = logging.getLogger(__name__)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SOAP_SYSTEMS: dict[str, Callable[[Path, str], SoapSystem]] = {
    "juki": juki.build,
    "zeimu": zeimu.build,
    "kotei": kotei.build,
}
SAMPLE_ENDPOINTS = {
    "juki": "http://127.0.0.1:18101/juki",
    "zeimu": "http://127.0.0.1:18102/zeimu",
    "shuno": "http://127.0.0.1:18103/shuno",
    "tainou": "http://127.0.0.1:18104/tainou",
    "kokuho": "http://127.0.0.1:18105/kokuho",
    "houmu": "http://127.0.0.1:18106/houmu",
    "kotei": "http://127.0.0.1:18107/kotei",
}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A vendor's access log is not ours to print."""


@dataclass
class RunningSamples:
    """The started systems: their URLs, and how to stop them."""

    urls: dict[str, str] = field(default_factory=dict)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def _start_soap(system: SoapSystem, host: str, port: int, url: str) -> Callable[[], None]:
    system.publish(url)
    server = make_server(
        host, port, system, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name=f"sample-{port}", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        system.log.close()

    return stop


def _start_rest(app: Any, host: str, port: int) -> Callable[[], None]:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"sample-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise OSError(f"sample system on {host}:{port} did not start")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)
        app.state.log.close()

    return stop


def start(endpoints: Mapping[str, str], data_dir: Path) -> RunningSamples:
    """Start every known sample system among ``endpoints`` (system id → URL) that points at
    this machine; their own data and received logs go under ``data_dir``."""
    running = RunningSamples()
    try:
        for system, url in sorted(endpoints.items()):
            parts = urlsplit(url)
            if parts.hostname not in LOCAL_HOSTS or parts.port is None:
                continue
            host, port, path = parts.hostname, parts.port, parts.path or f"/{system}"
            if system in SOAP_SYSTEMS:
                soap = SOAP_SYSTEMS[system](data_dir, path)
                running._stops.append(_start_soap(soap, host, port, url))
            elif system in REST_SYSTEMS:
                app = (
                    tainou.build(data_dir, path)
                    if system == "tainou"
                    else create_app(system, data_dir, path)
                )
                running._stops.append(_start_rest(app, host, port))
            else:
                continue
            running.urls[system] = url
    except BaseException:
        running.stop()
        raise
    return running


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the sample connected systems.")
    parser.add_argument("--data-dir", type=Path, default=Path(".renkei/samples"))
    arguments = parser.parse_args()
    running = start(SAMPLE_ENDPOINTS, arguments.data_dir)
    for system, url in running.urls.items():
        print(f"{system}: {url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        running.stop()


if __name__ == "__main__":
    main()
