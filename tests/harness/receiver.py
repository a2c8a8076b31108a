"""An HTTP receiver on loopback for what a server under test sends out (OTLP exports,
Alertmanager webhooks): it answers every POST 200 and keeps its path and body."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.url = ""
        self.bodies: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def keep(self, path: str, body: bytes) -> None:
        with self._lock:
            self.bodies.append((path, body))

    def posts(self) -> list[tuple[str, bytes]]:
        """(path, body) of every POST so far, oldest first."""
        with self._lock:
            return list(self.bodies)


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.keep(self.path, self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
