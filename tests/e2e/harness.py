"""Real exstream servers for end-to-end tests: a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
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
    ffmpeg = {"width": 320, "height": 240, "video_bitrate": 400_000, "preset": "ultrafast"}
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


@contextlib.contextmanager
def run_server(
    config: Path, env: dict[str, str] | None = None, ready_timeout: float = 60
) -> Iterator[Server]:
    log_path = config.parent / "server.log"
    full_env = {**os.environ, "EXSTREAM_LOG_LEVEL": "DEBUG", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
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
