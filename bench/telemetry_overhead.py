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

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from bench._common import exstream_argv, free_port, serve, write_config, write_standin


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_setup(directory: Path, mbits: float) -> tuple[Path, int]:
    source = write_standin(directory / "ffmpeg-source", mbits * 1e6 / 8)
    (directory / "media").mkdir(exist_ok=True)
    port = free_port()
    config = write_config(
        directory,
        port,
        [{"number": 1, "name": "Bench", "media": ["media"], "mode": "always_on"}],
        server={"data_dir": "data", "log_level": "WARNING"},
        ffmpeg={"ffmpeg": str(source)},
        stream={"buffer_bytes": 16777216},
        health={"backoff_initial": 1, "backoff_max": 1},
        pool={"max_processes": 4},
    )
    return config, port


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


def run_once(
    config: Path, port: int, env: dict[str, str], viewers: int, seconds: float
) -> tuple[float, int]:
    with serve(exstream_argv(config), f"http://127.0.0.1:{port}/readyz", env) as proc:
        return asyncio.run(measure(proc.pid, port, viewers, seconds, warmup=2.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mbits", type=float, default=4.0)
    args = parser.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    results: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp, otlp_sink() as endpoint:
        config, port = write_setup(Path(tmp), args.mbits)
        setups = {
            "off": {**base, "OTEL_SDK_DISABLED": "true"},
            "on": {
                **base,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            },
        }
        for round_ in range(args.rounds):
            for name, env in setups.items():
                cpu, received = run_once(config, port, env, args.viewers, args.seconds)
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
