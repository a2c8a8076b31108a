"""What telemetry costs a stream: one channel fanned out to N viewers, telemetry on vs off.

    python -m bench.telemetry_overhead [--viewers 200] [--seconds 10] [--rounds 2]

Runs `exstream serve` as a subprocess with a stand-in ffmpeg writing MPEG-TS at
`--mbits` Mbit/s, connects N viewers from this process, and measures the server
process's CPU time (its children excluded) over the same window in each set-up,
alternating the set-ups round by round:

- off: `OTEL_SDK_DISABLED=true` (no tracer provider, no HTTP tracing middleware);
- on:  the SDK provider, HTTP server spans, exemplars, and OTLP/HTTP export with a
       batch processor to a receiver in this process.

Prometheus metrics and JSON logs are the same in both. Prints the CPU ratio on/off.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench._common import bench_parser
from tests.harness.config import write_config
from tests.harness.receiver import receiving
from tests.harness.server import run_server
from tests.harness.standin import write_stand_in


def write_setup(directory: Path, mbits: float) -> Path:
    source = write_stand_in(directory / "ffmpeg-source", rate=mbits * 1e6 / 8)
    (directory / "media").mkdir(exist_ok=True)
    return write_config(
        directory,
        [{"number": 1, "name": "Bench", "media": ["media"], "mode": "always_on"}],
        encoding={},
        server={"data_dir": "data"},
        ffmpeg={"ffmpeg": str(source)},
        stream={"buffer_bytes": 16777216},
        health={"backoff_initial": 1, "backoff_max": 1},
        pool={"max_processes": 4},
    )


async def viewer(port: int, stop: asyncio.Event, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream/1.ts HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    received = 0
    try:
        while not stop.is_set():
            data = await reader.read(1 << 18)
            if not data:
                break
            received += len(data)
    finally:
        counts.append(received)
        writer.close()


async def measure(
    pid: int, port: int, viewers: int, seconds: float, warmup: float
) -> tuple[float, int]:
    """CPU seconds the server used per wall second, and the bytes the viewers got."""
    stop = asyncio.Event()
    counts: list[int] = []
    tasks = [asyncio.create_task(viewer(port, stop, counts)) for _ in range(viewers)]
    server = psutil.Process(pid)
    await asyncio.sleep(warmup)
    before = server.cpu_times()
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after = server.cpu_times()
    elapsed = time.monotonic() - started
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = (after.user - before.user) + (after.system - before.system)
    return cpu / elapsed, sum(counts)


def run_once(config: Path, env: dict[str, str], viewers: int, seconds: float) -> tuple[float, int]:
    with run_server(config, env, log_level="WARNING", stop_timeout=30) as server:
        return asyncio.run(measure(server.pid, server.port, viewers, seconds, warmup=2.0))


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mbits", type=float, default=4.0)
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp, receiving() as receiver:
        config = write_setup(Path(tmp), args.mbits)
        setups = {
            "off": {"OTEL_SDK_DISABLED": "true"},
            "on": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
        }
        for round_ in range(args.rounds):
            for name, env in setups.items():
                cpu, received = run_once(config, env, args.viewers, args.seconds)
                results[name].append(cpu)
                print(
                    f"round {round_ + 1} {name:>3}: {cpu * 100:5.1f}% of a core,"
                    f" viewers got {received / args.seconds / 1e6:.1f} MB/s",
                    flush=True,
                )
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(
        f"{args.viewers} viewers of {args.mbits:g} Mbit/s, {args.seconds:g} s x {args.rounds}:"
        f" telemetry off {off * 100:.1f}%, on {on * 100:.1f}% of a core;"
        f" ratio {on / off:.3f} ({(on / off - 1) * 100:+.1f}%, goal <= +3%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
