"""Real exstream servers for end-to-end tests: a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from tests.polling import wait_for

FAKE_FFMPEG = Path(__file__).with_name("fake_ffmpeg.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    directory: Path, channels: list[dict[str, Any]], **sections: dict[str, Any]
) -> Path:
    server = {"host": "127.0.0.1", "port": free_port(), "data_dir": str(directory / "data")}
    server.update(sections.pop("server", {}))
    ffmpeg: dict[str, Any] = {
        "width": 320, "height": 240, "video_bitrate": 400_000, "preset": "ultrafast",
        "pass_env": ["FAKE_FFMPEG_*"],  # the stand-in's plan, log and source
    }  # fmt: skip
    ffmpeg.update(sections.pop("ffmpeg", {}))
    document = {"server": server, "ffmpeg": ffmpeg, **sections, "channels": channels}
    path = directory / "channels.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, **{"timeout": 10, **kwargs})

    def get(self, path: str) -> httpx.Response:
        with self.client() as client:
            return client.get(path)

    def channel(self, number: int) -> dict[str, Any]:
        response = self.get(f"/api/channels/{number}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def children(self, name: str | None = None) -> list[psutil.Process]:
        """Live (not zombie) descendants, optionally those whose command line mentions `name`."""
        try:
            procs = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if name is None or any(name in part for part in proc.cmdline()):
                    alive.append(proc)
        return alive

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


class Recorder(threading.Thread):
    """A viewer of /stream/N.ts that keeps every byte (in memory, or written to `path`)
    and when each chunk came."""

    def __init__(self, server: Server, number: int, path: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.number = number
        self.path = path
        self.data = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.status = 0

    def run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(self.path.open("wb")) if self.path else None
                client = stack.enter_context(self.server.client(timeout=30))
                response = stack.enter_context(client.stream("GET", f"/stream/{self.number}.ts"))
                self.status = response.status_code
                for chunk in response.iter_raw():
                    if out is not None:
                        out.write(chunk)
                    else:
                        self.data += chunk
                    self.arrivals.append((time.monotonic(), len(chunk)))
                    if self.stop.is_set():
                        return
        except BaseException as exc:
            self.error = exc

    def seconds(self) -> float:
        arrivals = self.arrivals
        return arrivals[-1][0] - arrivals[0][0] if len(arrivals) > 1 else 0.0

    def finish(self, timeout: float = 30) -> bytes:
        """Stop and wait for the viewer; the bytes it kept in memory."""
        self.stop.set()
        self.join(timeout)
        return bytes(self.data)


@contextlib.contextmanager
def run_server(
    config: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60,
    open_files: int | None = None,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """The server of `config`; `open_files` sets its RLIMIT_NOFILE (soft and hard); `cwd`
    its working directory."""
    log_path = config.parent / "server.log"
    full_env = {**os.environ, "EXSTREAM_LOG_LEVEL": "DEBUG", **(env or {})}

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=limit_open_files if open_files is not None else None,
            cwd=cwd,
        )
    import tomllib

    port = tomllib.loads(config.read_text())["server"]["port"]
    server = Server(process, f"http://127.0.0.1:{port}", log_path, full_env)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"server exited early:\n{server.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return server.get("/readyz").status_code == 200
            return False

        wait_for(ready, ready_timeout, "the server to be ready")
        yield server
    finally:
        stop_server(server)


def stop_server(server: Server, timeout: float = 10) -> None:
    process = server.process
    descendants = server.children()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for proc in descendants:  # never leave a child behind, even when a test failed
        with contextlib.suppress(psutil.Error):
            proc.kill()
