"""An ASGI app served by uvicorn in a thread of the test process, on a free 127.0.0.1 port:
real HTTP for tests that need the app's own objects at hand. uvicorn is told to leave the
process's logging alone (its default configuration would change the loggers of later tests
in the same worker)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.support.receivers import free_port, wait_for


@contextmanager
def served_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
