from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from loguru import logger
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from service.app import create_app
from service.config import Settings, load_settings
from telemetry.logging import STDLIB_LOGGERS, configure_logging
from tests.polling import wait_until

# A stand-in for ffmpeg: ignores its argv and writes MPEG-TS packets (a PAT, then null
# packets) to stdout; "stall" stops writing and sleeps, "stream" keeps writing, "exit" fails.
STANDIN = """\
import sys, time
MODE = {mode!r}
pat = bytes([0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00,
             0x00, 0x01, 0xE1, 0x00, 0xE8, 0xF9, 0x5E, 0x7D])
pat += bytes([0xFF]) * (188 - len(pat))
null = bytes([0x47, 0x1F, 0xFF, 0x10]) + bytes([0xFF]) * 184
out = sys.stdout.buffer
if MODE == "exit":
    sys.exit(1)
PACE, FOREVER = 0.05, 3600
out.write(pat + null * 100)
out.flush()
while MODE == "stream":
    time.sleep(PACE)
    out.write(pat + null * 20)
    out.flush()
time.sleep(FOREVER)
"""


@pytest.fixture
def standin(tmp_path: Path) -> Callable[[str], Path]:
    def make(mode: str) -> Path:
        path = tmp_path / f"ffmpeg-{mode}"
        path.write_text(f"#!{sys.executable}\n" + STANDIN.format(mode=mode), encoding="utf-8")
        path.chmod(0o755)
        return path

    return make


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one channel whose ffmpeg is `ffmpeg`; extra TOML tables may be given."""

    def make(ffmpeg: Path, *, mode: str = "always_on", extra: str = "", port: int = 0) -> Settings:
        (tmp_path / "media").mkdir(exist_ok=True)
        config = tmp_path / "channels.toml"
        config.write_text(
            f"""
[server]
host = "127.0.0.1"
port = {port}
data_dir = "data"
graceful_shutdown = 2

[ffmpeg]
ffmpeg = "{ffmpeg}"
{extra}

[[channels]]
number = 1
name = "Test"
media = ["media"]
mode = "{mode}"
""",
            encoding="utf-8",
        )
        return load_settings(config, {})

    return make


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


TracedApp = Callable[..., Starlette]


@pytest.fixture
def traced_app(
    standin: Callable[[str], Path],
    make_settings: Callable[..., Settings],
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> TracedApp:
    """`make(behaviour, **settings)`: an app whose ffmpeg is the stand-in behaving so
    ("stall", "stream", "exit"), traced into the `spans` exporter; settings as for
    `make_settings` (whose `mode` is the channel's)."""
    provider, _ = spans

    def make(behaviour: str, /, **settings: Any) -> Starlette:
        return create_app(
            make_settings(standin(behaviour), **settings),
            registry=CollectorRegistry(),
            tracer_provider=provider,
        )

    return make


@pytest.fixture
def log_entries() -> Iterator[list[dict[str, Any]]]:
    entries: list[dict[str, Any]] = []
    configure_logging("DEBUG", "json", stream=io.StringIO(), sinks=[entries.append])
    yield entries
    logger.remove()
    logger.configure(patcher=None)
    logger.add(sys.stderr)
    for name in STDLIB_LOGGERS:
        std = logging.getLogger(name)
        std.handlers = []
        std.propagate = True
    logging.root.handlers = []


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """A real uvicorn on a free loopback port, in this event loop: (base URL, server)."""
    sock = free_socket()
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    bodies: list[tuple[str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()
    thread.join(10)
