"""Helpers shared by the benches: servers on loopback, stand-in sources, numbers.

Nothing here is imported by the service or the tests; benches run on demand only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# A stand-in for ffmpeg: loops a TS file (or null packets) to stdout at a byte rate.
# With $STANDIN_SPAWN_LOG set it appends "<unix time> <pid>" there when it starts.
STANDIN = """\
import os, sys, time
log = os.environ.get("STANDIN_SPAWN_LOG")
if log:
    with open(log, "a") as f:
        f.write(f"{{time.time():.6f}} {{os.getpid()}}\\n")
rate = {rate}
source = {source!r}
if source:
    with open(source, "rb") as f:
        data = f.read()
else:
    data = (bytes([0x47, 0x40, 0x00, 0x10]) + bytes([0xFF]) * 184) + (
        bytes([0x47, 0x1F, 0xFF, 0x10]) + bytes([0xFF]) * 184) * 349
step = 188 * max(1, int(rate / 188 / 20))  # about 20 writes a second
out = sys.stdout.buffer
start = time.monotonic()
sent = offset = 0
try:
    while True:
        chunk = data[offset:offset + step]
        offset = offset + step if offset + step < len(data) else 0
        out.write(chunk)
        out.flush()
        sent += len(chunk)
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
except (BrokenPipeError, KeyboardInterrupt):
    pass
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> int:
    """Many viewers need many sockets: lift the soft limit to the hard one (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def write_standin(path: Path, bytes_per_second: float, source: Path | None = None) -> Path:
    """An executable usable as `[ffmpeg] ffmpeg = path`; it ignores its argv."""
    text = STANDIN.format(rate=bytes_per_second, source=str(source) if source else "")
    path.write_text(f"#!{sys.executable} -S\n{text}", encoding="utf-8")
    path.chmod(0o755)
    return path


def make_ts_clip(path: Path, seconds: float = 10, mbits: float = 4.0) -> Path:
    """A real H.264/AAC MPEG-TS clip at a constant `mbits` (640x360, 2 s GOP), from lavfi."""
    if path.exists():
        return path
    video = int(mbits * 1e6 * 0.9)
    argv = [
        "ffmpeg", "-v", "error", "-y", "-nostdin",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50",
        "-b:v", str(video), "-maxrate", str(video), "-bufsize", str(video),
        "-c:a", "aac", "-b:a", "128k", "-shortest",
        "-muxrate", str(int(mbits * 1e6)), "-f", "mpegts", str(path),
    ]  # fmt: skip
    subprocess.run(argv, check=True, timeout=300)
    return path


def write_config(
    directory: Path, port: int, channels: list[dict[str, Any]], **sections: dict[str, Any]
) -> Path:
    server = {"host": "127.0.0.1", "port": port, "data_dir": str(directory / "data")}
    server.update(sections.pop("server", {}))
    document = {"server": server, **sections, "channels": channels}
    path = directory / "channels.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_http_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with code {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=5).status_code == 200
        return False

    wait_for(ready, timeout, url, interval=0.2)


@contextlib.contextmanager
def serve(
    argv: Sequence[str], ready_url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess in its own session; SIGTERM then SIGKILL, children included."""
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http_ready(ready_url, proc)
        yield proc
    finally:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if log:
            out.close()  # type: ignore[union-attr]


def exstream_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "service", "serve", "--config", str(config)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process, its children excluded."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def histogram_buckets(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of histogram `name`, summed over its label sets."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile (0..1) of the observations between two scrapes, as Prometheus'
    histogram_quantile does: linear inside the bucket that holds it."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return float("nan")
    rank = q * delta[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            inside = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / inside if inside else 0)
        lower_le, lower_count = le, count
    return delta[-1][0]


async def measure_lag(stop: asyncio.Event, lags: list[float], tick: float = 0.01) -> None:
    """How late this event loop wakes from `tick`-second sleeps, until `stop` is set."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(tick)
        lags.append(time.perf_counter() - started - tick)


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for a server under test: this one, minus OTEL_* and EXSTREAM_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "EXSTREAM_"))}
    env.update(extra)
    return env
