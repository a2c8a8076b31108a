"""A viewer of a channel's stream in a thread of its own, for end-to-end tests and benches."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from tests.harness.server import Server


class Viewer(threading.Thread):
    """Reads /stream/N.ts and keeps every byte (in memory, or written to `path`), when each
    chunk came, the response's status and the error that ended it, if any (a status other
    than 200 is one)."""

    def __init__(self, server: Server, number: int, path: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.number = number
        self.path = path
        self.data = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.error: Exception | None = None
        self.status = 0

    def run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(self.path.open("wb")) if self.path else None
                client = stack.enter_context(self.server.client(timeout=30))
                response = stack.enter_context(client.stream("GET", f"/stream/{self.number}.ts"))
                self.status = response.status_code
                if self.status != 200:
                    raise AssertionError(f"/stream/{self.number}.ts answered {self.status}")
                for chunk in response.iter_raw():
                    if out is not None:
                        out.write(chunk)
                    else:
                        self.data += chunk
                    self.arrivals.append((time.monotonic(), len(chunk)))
                    if self.stop.is_set():
                        return
        except Exception as exc:  # the test asserts on it, in its own thread
            self.error = exc

    def since(self, moment: float) -> list[tuple[float, int]]:
        return [(t, n) for t, n in list(self.arrivals) if t >= moment]

    def bytes_since(self, moment: float) -> int:
        return sum(n for _, n in self.since(moment))

    def seconds(self) -> float:
        arrivals = self.arrivals
        return arrivals[-1][0] - arrivals[0][0] if len(arrivals) > 1 else 0.0

    def finish(self, timeout: float = 30) -> bytes:
        """Stop and wait for the viewer; the bytes it kept in memory."""
        self.stop.set()
        self.join(timeout)
        return bytes(self.data)
