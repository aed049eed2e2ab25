"""A real HTTP server on 127.0.0.1 that keeps every body POSTed to it (per path) and answers
200, or with what ``answer`` returns for a path (a provider's reply to an inquiry)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = Callable[[str, bytes], bytes | None]  # (path, request body) → reply body or None


class CaptureServer:
    def __init__(self, answer: Answer | None = None) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self._answer = answer
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with capture._lock:
                    capture.bodies.setdefault(self.path, []).append(body)
                reply = capture._answer(self.path, body) if capture._answer else None
                self.send_response(200)
                self.send_header("Content-Type", "application/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(reply or b"")))
                self.end_headers()
                self.wfile.write(reply or b"")

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: bodies hold personal data

        return Handler

    def received(self, path: str) -> list[bytes]:
        with self._lock:
            return list(self.bodies.get(path, []))

    def start(self) -> CaptureServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
