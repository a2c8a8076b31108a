"""Log store benchmark (not part of `make test`): `python -m bench.logs [--entries N]`.

Ingests N entries (default 1 M) through the store's sink from a producer thread, as
loguru would, while the event loop measures its own lag; then times 100-entry pages
with and without filters, through the same async calls the API handlers make.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench._common import measure_lag
from service.config import LogSettings
from service.logstore import LEVELS, LogEntry, LogFilter, LogStore, micros
from telemetry.metrics import Metrics

LEVEL_MIX = ["INFO"] * 90 + ["DEBUG"] * 6 + ["WARNING"] * 3 + ["ERROR"]
WORDS = [
    "viewer", "joined", "left", "channel", "restart", "ffmpeg",
    "spawn", "stall", "slate", "playout", "segment",
]  # fmt: skip


def make_entries(count: int, start: datetime, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    entries = []
    trace = ""
    for i in range(count):
        if i % 10 == 0:
            trace = f"{rng.getrandbits(128):032x}" if rng.random() < 0.5 else ""
        entries.append(
            {
                "time": (start + timedelta(milliseconds=i)).isoformat(),
                "level": rng.choice(LEVEL_MIX),
                "message": f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{i} token=abc{i}",
                "logger": "bench",
                "channel": str(rng.randint(1, 10)),
                "trace_id": trace or None,
                "span_id": f"{rng.getrandbits(64):016x}" if trace else None,
                "extra": {"n": i, "bytes_sent": rng.randint(0, 10**9)},
            }
        )
    return entries


async def ingest(store: LogStore, entries: list[dict[str, Any]]) -> dict[str, float]:
    high_water = int(store.settings.queue_size * 0.8)

    def produce() -> float:
        busy = 0.0
        for i, entry in enumerate(entries):
            if i % 1000 == 0:
                while store.backlog > high_water:  # the bench paces itself, not the sink
                    time.sleep(0.001)
            started = time.perf_counter()
            store.append(entry)
            busy += time.perf_counter() - started
        return busy

    lags: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(measure_lag(stop, lags))
    started = time.perf_counter()
    append_time = await asyncio.to_thread(produce)
    await store.flush(timeout=600)
    elapsed = time.perf_counter() - started
    stop.set()
    await lag_task
    lags.sort()
    return {
        "entries": len(entries),
        "seconds": elapsed,
        "per_second": len(entries) / elapsed,
        "append_us": append_time / len(entries) * 1e6,
        "lag_p50_ms": lags[len(lags) // 2] * 1000,
        "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
        "lag_max_ms": lags[-1] * 1000,
        "dropped": store.metrics.registry.get_sample_value(
            "exstream_logs_dropped_total", {"reason": "queue_full"}
        )
        or 0,
    }


async def timed(call: Callable[[], Awaitable[list[LogEntry]]], runs: int) -> dict[str, float]:
    times = []
    sizes = []
    for _ in range(runs):
        started = time.perf_counter()
        page = await call()
        times.append(time.perf_counter() - started)
        sizes.append(len(page))
    times.sort()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "rows": statistics.mean(sizes),
    }


async def pages(store: LogStore, start: datetime, count: int, runs: int) -> dict[str, Any]:
    newest = await store.last_key()
    rng = random.Random(2)
    traced = next(e for e in await store.page(LogFilter(), None, 1000) if e.trace_id)
    middle = start + timedelta(milliseconds=count // 2)
    cases: dict[str, LogFilter] = {
        "no filter": LogFilter(),
        "level=WARNING": LogFilter(min_level=LEVELS["WARNING"]),
        "level=ERROR": LogFilter(min_level=LEVELS["ERROR"]),
        "channel=3": LogFilter(channel="3"),
        "channel=3&level=ERROR": LogFilter(channel="3", min_level=LEVELS["ERROR"]),
        "trace_id": LogFilter(trace_id=traced.trace_id),
        "since/until (1 min window)": LogFilter(
            since_us=micros(middle), until_us=micros(middle + timedelta(minutes=1))
        ),
        "q=restart (common)": LogFilter(q="restart"),
        "q=#123456 (one match)": LogFilter(q="#123456 "),
    }
    results: dict[str, Any] = {}
    for name, where in cases.items():
        results[name] = await timed(functools.partial(store.page, where, None, 101), runs)

    async def deep_page() -> list[LogEntry]:
        return await store.page(LogFilter(), rng.randint(1, newest), 101)

    results["no filter, random cursor"] = await timed(deep_page, runs)

    async def deep_level() -> list[LogEntry]:
        where = LogFilter(min_level=LEVELS["WARNING"])
        return await store.page(where, rng.randint(1, newest), 101)

    results["level=WARNING, random cursor"] = await timed(deep_level, runs)
    return results


async def main(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LogStore(
            Path(tmp) / "logs.sqlite",
            LogSettings(max_rows=max(count, 1000)),
            Metrics(CollectorRegistry()),
        )
        await store.start()
        start = datetime.now(UTC) - timedelta(hours=1)
        entries = await asyncio.to_thread(make_entries, count, start)
        result = await ingest(store, entries)
        del entries
        print(
            f"ingest: {result['entries']:,} entries in {result['seconds']:.1f} s ="
            f" {result['per_second']:,.0f} entries/s; append() {result['append_us']:.1f} us/call;"
            f" dropped {result['dropped']:.0f}"
        )
        print(
            f"event-loop lag during ingest: p50 {result['lag_p50_ms']:.2f} ms,"
            f" p99 {result['lag_p99_ms']:.2f} ms, max {result['lag_max_ms']:.2f} ms"
        )
        print(f"100-entry pages over {count:,} entries ({runs} runs each):")
        print(f"  {'query':32} {'p50 ms':>8} {'p99 ms':>8} {'rows':>6}")
        for name, figures in (await pages(store, start, count, runs)).items():
            print(
                f"  {name:32} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f}"
                f" {figures['rows']:6.0f}"
            )
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    assert threading.current_thread() is threading.main_thread()
    asyncio.run(main(args.entries, args.runs))
