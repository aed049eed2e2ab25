"""Coverage-guided fuzzing (atheris / libFuzzer) of the hub's hostile-input surface.

Targets (one per run, ``--target``):

- ``parse``: :func:`bus.validation.secure_parse.secure_parse` on the raw bytes;
- ``validate``: :meth:`bus.validation.validator.Validator.validate` (parse, XSD, domain rules);
- ``soap``: ``POST /soap/{Service}`` through the real ASGI application, in process;
- ``rest``: ``POST /api/v1/messages/{Service}`` (XML or JSON form), in process.

The SOAP and REST targets call the application assembled exactly as ``renkei serve`` does
(entry-point routers, a real :class:`~bus.hub.Hub` on a throw-away SQLite file, no dispatch
workers), so a fuzzed input runs Authenticate → … → Audit like any request. The first fuzzer
byte picks the service and the media type. A crash is any exception escaping the target (the
ASGI server would answer 500 and log a traceback); a refusal with a coded finding is the
expected outcome. The seed corpus is every file under ``samples/messages``.

Run (one target, one million inputs, stats at the end)::

    .venv/bin/pip install atheris   # or: pip install -e '.[fuzz]'
    .venv/bin/python bench/fuzz_inputs.py --target parse -- -runs=1000000 -print_final_stats=1

Everything after ``--`` goes to libFuzzer (``-max_total_time=SECONDS``, ``-max_len=BYTES``,
``-artifact_prefix=DIR/``). A crash leaves its input in ``crash-<sha1>``; turn it into a
regression test in ``tests/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["bus", "adapters"]):
    from bus.hub import Hub
    from bus.settings import Settings
    from bus.validation.secure_parse import secure_parse
    from bus.validation.validator import Validator
    from bus.webapp import create_app

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "messages"
SERVICES = sorted(path.name for path in SAMPLES.iterdir() if path.is_dir())
REST_MEDIA = (b"application/xml", b"application/json", b"text/xml", b"text/plain")


def seed_corpus(directory: Path, selector: bool) -> Path:
    """The sample messages (valid and invalid) as libFuzzer's starting corpus; for the HTTP
    targets each is prefixed with the byte that selects its own service (and XML)."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sorted(SAMPLES.rglob("*.*"))):
        data = path.read_bytes()
        if selector:
            data = bytes([SERVICES.index(path.parent.name)]) + data
        (directory / f"{index:04d}-{path.name}").write_bytes(data)
    return directory


class AsgiCaller:
    """Calls an ASGI app in process, one request at a time, on one event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    def post(self, path: str, body: bytes, content_type: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "app": self.app,
        }
        status: list[int] = []
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                status.append(int(event["status"]))

        self.loop.run_until_complete(self.app(scope, receive, send))  # raises on a crash
        return status[0]


def open_app(data_dir: Path) -> Any:
    """The application with a hub on ``data_dir`` (no workers: nothing is delivered)."""
    app = create_app()
    app.state.hub = Hub.open(Settings(data_dir=data_dir, dispatch_workers=0))
    return app


def _discard(_result: object) -> None:
    """The targets' results are not inspected: only an escaping exception is a finding."""


def target(name: str, data_dir: Path) -> Callable[[bytes], None]:
    if name == "parse":
        return lambda data: _discard(secure_parse(data))
    if name == "validate":
        validator = Validator()
        return lambda data: _discard(validator.validate(data))
    caller = AsgiCaller(open_app(data_dir))

    def http(data: bytes) -> None:
        if not data:
            return
        service = SERVICES[data[0] % len(SERVICES)]
        body = data[1:]
        if name == "soap":
            caller.post(f"/soap/{service}", body, b"text/xml; charset=utf-8")
        else:
            media = REST_MEDIA[(data[0] // len(SERVICES)) % len(REST_MEDIA)]
            caller.post(f"/api/v1/messages/{service}", body, media)

    return http


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("parse", "validate", "soap", "rest"), required=True)
    parser.add_argument("--corpus", type=Path, help="corpus directory (default: a seeded temp)")
    args, libfuzzer = parser.parse_known_args()
    logging.disable(logging.CRITICAL)  # rejected input is logged by design; keep stdout quiet
    work = Path(tempfile.mkdtemp(prefix=f"renkei-fuzz-{args.target}-"))
    corpus = args.corpus or seed_corpus(work / "corpus", args.target in ("soap", "rest"))
    test_one = target(args.target, work / "data")
    flags = [arg for arg in libfuzzer if arg != "--"]
    atheris.Setup([sys.argv[0], *flags, str(corpus)], test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
