"""Real exstream servers: `exstream serve` in a process of its own on a free loopback
port, and one-shot runs of the command line."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import processes
from tests.harness.config import port_of
from tests.polling import wait_for


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

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

    def signal_channel(self, number: int, signum: int) -> int:
        """Send `signum` to the channel's current process group; its pid. Items follow one
        another, so the process read from the API may have just ended: read again."""

        def send() -> int | None:
            pid: int | None = self.channel(number)["pid"]
            if pid is None:
                return None
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                return None
            return pid

        result: int = wait_for(send, 30, f"a process of channel {number} to signal")
        return result

    def children(self, name: str | None = None) -> list[psutil.Process]:
        """Live descendants, optionally those whose command line mentions `name`."""
        return processes.descendants(self.pid, name)

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


def serve_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "service", "serve", "--config", str(config)]


@contextlib.contextmanager
def run_server(
    config: Path,
    env: dict[str, str] | None = None,
    *,
    log_level: str = "DEBUG",
    ready_timeout: float = 60,
    stop_timeout: float = 10,
    open_files: int | None = None,
    cwd: Path | None = None,
    output: int | None = None,
) -> Iterator[Server]:
    """The server of `config`, once ready, its log in server.log next to `config` (or its
    output to the file descriptor `output`); `env` adds to a clean environment (see
    processes.clean_environment); `open_files` sets its RLIMIT_NOFILE (soft and hard),
    `cwd` its working directory."""
    base_url = f"http://127.0.0.1:{port_of(config)}"
    with processes.running(
        serve_argv(config),
        None if output is not None else config.parent / "server.log",
        output=output,
        ready_url=f"{base_url}/readyz",
        env=processes.clean_environment(EXSTREAM_LOG_LEVEL=log_level, **(env or {})),
        cwd=cwd,
        open_files=open_files,
        ready_timeout=ready_timeout,
        stop_timeout=stop_timeout,
    ) as process:
        yield Server(process, base_url, config.parent / "server.log")


def stop_server(server: Server, timeout: float = 10) -> None:
    processes.stop(server.process, timeout)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`exstream ARGS` to its end, in a clean environment and `env`; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env=processes.clean_environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
