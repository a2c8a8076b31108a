"""Helpers shared by the benches: sources, numbers, limits. Servers, ports, configs and
the stand-in ffmpeg come from the tests' harness (tests/harness/), as the tests' do.

Nothing here is imported by the service or the tests; benches run on demand only.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests import polling

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def bench_parser(doc: str | None, epilog: str | None = None) -> argparse.ArgumentParser:
    """A bench's command line: the first paragraph of its docstring says what it does."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0], epilog=epilog)


def raise_fd_limit() -> int:
    """Many viewers need many sockets: lift the soft limit to the hard one (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


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


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """tests.polling.wait_for for a bench: a timeout ends the run with its message."""
    try:
        return polling.wait_for(check, timeout, what, interval)
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process, its children excluded."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def busy_seconds() -> float:
    """CPU time every process on the machine has used (idle and I/O wait excluded)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


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
