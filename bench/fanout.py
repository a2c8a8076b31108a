"""Fan-out: N viewers of one ~4 Mbit/s channel on loopback, exstream vs a minimal fan-out.

    python -m bench.fanout [--viewers 500,1000,2000] [--seconds 10] [--rounds 3]

For each round, each server (alternating which goes first) is started as a subprocess
and loaded with each viewer count in turn, lowest first:

- exstream: `exstream serve` with one always-on channel whose "ffmpeg" is a stand-in
  that loops a real H.264/AAC MPEG-TS clip (made once with ffmpeg's lavfi sources,
  640x360, constant 4 Mbit/s mux rate) at 4 Mbit/s. The stand-in isolates the
  fan-out: no encoder competes for the two cores.
- baseline: a few lines of Starlette under the same uvicorn (uvloop, httptools): the
  same stand-in, read every `chunk_interval` like exstream's runner, one asyncio.Queue
  and one StreamingResponse per viewer.

The load generator runs in its own process (uvloop, one BufferedProtocol per viewer
that only counts bytes). Per level it opens the viewers, waits for their first byte,
lets them run `--warmup` s, then measures `--seconds` s: each viewer's rate, the
server's CPU (psutil on its pid, children excluded) and its own CPU, and the time to
first body byte of `--probes` extra viewers joining one after another while the rest
stream. machine% is what every process on the machine used (of 200% on 2 cores):
what is left after server and load generator is other work sharing the cores.
A level is held when every viewer got >= `--threshold` Mbit/s and none was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bench._common import (
    ROOT,
    bench_parser,
    busy_seconds,
    cpu_seconds,
    make_ts_clip,
    percentile,
    raise_fd_limit,
)
from tests.harness.config import write_config
from tests.harness.network import free_port
from tests.harness.processes import running
from tests.harness.server import run_server
from tests.harness.standin import write_stand_in

CHUNK_INTERVAL = 0.1  # the [stream] chunk_interval default, used by both servers
KINDS = ("exstream", "baseline")


# --- the minimal fan-out --------------------------------------------------------------


def baseline_app(source: str, queue_chunks: int = 64) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    queues: set[asyncio.Queue[bytes]] = set()

    async def pump() -> None:
        proc = await asyncio.create_subprocess_exec(
            source, stdout=asyncio.subprocess.PIPE, limit=1 << 22
        )
        assert proc.stdout is not None
        while data := await proc.stdout.read(1 << 22):
            for queue in list(queues):
                if queue.full():
                    queues.discard(queue)  # too slow: dropped
                else:
                    queue.put_nowait(data)
            await asyncio.sleep(CHUNK_INTERVAL)

    async def stream(request: Request) -> Response:
        queue: asyncio.Queue[bytes] = asyncio.Queue(queue_chunks)
        queues.add(queue)

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield await queue.get()
            finally:
                queues.discard(queue)

        return StreamingResponse(body(), media_type="video/mp2t")

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(pump())
        yield
        task.cancel()

    return Starlette(
        routes=[Route("/stream/1.ts", stream), Route("/readyz", ready)], lifespan=lifespan
    )


def serve_baseline(port: int, source: str) -> None:
    import uvicorn

    uvicorn.run(
        baseline_app(source), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


# --- the load generator (its own process) ---------------------------------------------


class Viewer(asyncio.BufferedProtocol):
    """One viewer of a stream on a raw connection: counts body bytes, notes the first."""

    def __init__(self, buffer: bytearray, request: bytes) -> None:
        self.buffer = buffer
        self.request = request
        self.head = bytearray()
        self.started = time.monotonic()
        self.first: float | None = None  # when the first body byte came
        self.body = 0
        self.status_ok = False
        self.lost = False
        self.transport: asyncio.Transport | None = None
        self.answered = asyncio.Event()  # first body byte, or the connection ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.first is not None:
            self.body += nbytes
            return
        self.head += self.buffer[:nbytes]
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        self.status_ok = self.head.startswith(b"HTTP/1.1 200")
        self.body = len(self.head) - end - 4
        if self.body > 0:
            self.first = time.monotonic()
            self.answered.set()
        else:
            self.head = self.head[: end + 4]  # headers only; the body starts next time

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.answered.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass
class LevelResult:
    viewers: int
    connected: int
    rates: list[float]  # Mbit/s per viewer over the window
    lost: int
    server_cpu: float  # cores
    loadgen_cpu: float
    ramp_ttfb: list[float]
    probe_ttfb: list[float]
    machine_cpu: float  # cores busy on the whole machine, every process


async def _open(port: int, buffer: bytearray, request: bytes) -> Viewer:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        _, viewer = await loop.create_connection(lambda: Viewer(buffer, request), "127.0.0.1", port)
    return viewer


async def wait_answered(viewers: Sequence[Viewer], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            for viewer in viewers:
                await viewer.answered.wait()


async def _load(
    port: int, viewers: int, warmup: float, seconds: float, probes: int, server_pid: int
) -> LevelResult:
    buffer = bytearray(1 << 18)
    request = b"GET /stream/1.ts HTTP/1.1\r\nHost: bench\r\n\r\n"
    gate = asyncio.Semaphore(256)  # connects in flight, under the listen backlog

    async def one() -> Viewer | None:
        async with gate:
            with contextlib.suppress(OSError, TimeoutError):
                return await _open(port, buffer, request)
        return None

    opened = [v for v in await asyncio.gather(*(one() for _ in range(viewers))) if v]
    try:
        await wait_answered(opened, 30)
        ramp = [v.first - v.started for v in opened if v.first is not None]
        await asyncio.sleep(warmup)
        before = [v.body for v in opened]
        cpu_before, own_before = cpu_seconds(server_pid), time.process_time()
        machine_before = busy_seconds()
        started = time.monotonic()
        probe_ttfb: list[float] = []
        for i in range(probes):
            await asyncio.sleep(max(0.0, started + (i + 0.5) * seconds / probes - time.monotonic()))
            with contextlib.suppress(OSError, TimeoutError):
                probe = await _open(port, bytearray(1 << 16), request)
                await wait_answered([probe], 1.0)
                if probe.first is not None:
                    probe_ttfb.append(probe.first - probe.started)
                probe.close()
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        elapsed = time.monotonic() - started
        cpu = (cpu_seconds(server_pid) - cpu_before) / elapsed
        own = (time.process_time() - own_before) / elapsed
        machine = (busy_seconds() - machine_before) / elapsed
        rates = [(v.body - b) * 8 / elapsed / 1e6 for v, b in zip(opened, before, strict=True)]
        lost = sum(v.lost or not v.status_ok for v in opened)
        return LevelResult(viewers, len(opened), rates, lost, cpu, own, ramp, probe_ttfb, machine)
    finally:
        for v in opened:
            v.close()


def run_loadgen(
    port: int, viewers: int, warmup: float, seconds: float, probes: int, server_pid: int
) -> LevelResult:
    import uvloop

    raise_fd_limit()
    return uvloop.run(_load(port, viewers, warmup, seconds, probes, server_pid))


# --- the driver -----------------------------------------------------------------------


@contextlib.contextmanager
def start(kind: str, root: Path, standin: Path) -> Iterator[tuple[int, int]]:
    """The server of `kind`, running: its (pid, port)."""
    if kind == "baseline":
        port = free_port()
        argv = [sys.executable, "-m", "bench.fanout", "--serve-baseline", str(port), str(standin)]
        ready = f"http://127.0.0.1:{port}/readyz"
        with running(
            argv, root / "baseline.log", ready_url=ready, cwd=ROOT, stop_timeout=30
        ) as proc:
            yield proc.pid, port
        return
    (root / "media").mkdir(exist_ok=True)
    config = write_config(
        root,
        [{"number": 1, "name": "Bench", "media": [str(root / "media")], "mode": "always_on"}],
        encoding={},
        ffmpeg={"ffmpeg": str(standin)},
        stream={"chunk_interval": CHUNK_INTERVAL},
    )
    with run_server(config, log_level="INFO", stop_timeout=30) as server:
        yield server.pid, server.port


def held(result: LevelResult, threshold: float) -> bool:
    return (
        result.connected == result.viewers
        and result.lost == 0
        and min(result.rates, default=0) >= threshold
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        __doc__, "Load is loopback only, bounded by --viewers and the time options."
    )
    parser.add_argument("--viewers", default="500,1000,2000", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per level")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mbits", type=float, default=4.0, help="source rate")
    parser.add_argument("--threshold", type=float, default=3.8, help="Mbit/s every viewer needs")
    parser.add_argument("--probes", type=int, default=20, help="late joiners timed per level")
    parser.add_argument("--kinds", default=",".join(KINDS), help="servers to measure")
    parser.add_argument(
        "--keep-going", action="store_true", help="measure higher levels after one failed"
    )
    parser.add_argument("--serve-baseline", nargs=2, metavar=("PORT", "SOURCE"), help="internal")
    args = parser.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1])
        return 0
    levels = sorted(int(v) for v in args.viewers.split(","))
    kinds = [k for k in args.kinds.split(",") if k]
    limit = raise_fd_limit()
    if max(levels) * 2 + 200 > limit:
        raise SystemExit(f"the open-file limit ({limit}) is too low for {max(levels)} viewers")
    results: dict[tuple[str, int], list[LevelResult]] = {}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(1, mp_context=spawn) as pool:
        root = Path(tmp)
        clip = make_ts_clip(root / "clip.ts", seconds=10, mbits=args.mbits)
        standin = write_stand_in(root / "ffmpeg-standin", rate=args.mbits * 1e6 / 8, source=clip)
        print(
            f"source: stand-in looping a {clip.stat().st_size / 1e6:.1f} MB lavfi H.264/AAC TS"
            f" at {args.mbits:g} Mbit/s; levels {levels}; {args.seconds:g} s windows",
            flush=True,
        )
        print(
            f"{'round':>5} {'server':>9} {'viewers':>7} {'held':>4} {'min':>5} {'p50':>5}"
            f" {'lost':>4} {'cpu%':>6} {'us/s/viewer':>11} {'ttfb p50':>8} {'p99 ms':>6}"
            f" {'ramp p99':>8} {'loadgen%':>8} {'machine%':>8}",
            flush=True,
        )
        for round_ in range(args.rounds):
            order = kinds if round_ % 2 == 0 else kinds[::-1]
            for kind in order:
                with start(kind, root, standin) as (pid, port):
                    print(f"      {kind} server pid {pid}", flush=True)
                    for level in levels:
                        result = pool.submit(
                            run_loadgen,
                            port,
                            level,
                            args.warmup,
                            args.seconds,
                            args.probes,
                            pid,
                        ).result(timeout=args.warmup + args.seconds + args.probes + 120)
                        results.setdefault((kind, level), []).append(result)
                        ok = held(result, args.threshold)
                        print(
                            f"{round_ + 1:>5} {kind:>9} {level:>7} {'yes' if ok else 'NO':>4}"
                            f" {min(result.rates, default=0):5.2f}"
                            f" {statistics.median(result.rates or [0]):5.2f} {result.lost:>4}"
                            f" {result.server_cpu * 100:6.1f}"
                            f" {result.server_cpu / level * 1e6:11.0f}"
                            f" {percentile(result.probe_ttfb, 50) * 1000:8.1f}"
                            f" {percentile(result.probe_ttfb, 99) * 1000:6.1f}"
                            f" {percentile(result.ramp_ttfb, 99) * 1000:8.0f}"
                            f" {result.loadgen_cpu * 100:8.1f}"
                            f" {result.machine_cpu * 100:8.0f}",
                            flush=True,
                        )
                        if not ok and not args.keep_going:
                            break
    summarise(results, kinds, levels, args.rounds, args.threshold)
    return 0


def summarise(
    results: dict[tuple[str, int], list[LevelResult]],
    kinds: list[str],
    levels: list[int],
    rounds: int,
    threshold: float,
) -> None:
    print(f"\nmedians over {rounds} round(s); held = every viewer >= {threshold:g} Mbit/s")
    best: dict[str, int] = {}
    for kind in kinds:
        for level in levels:
            runs = results.get((kind, level), [])
            wins = sum(held(r, threshold) for r in runs)
            if runs and wins * 2 > rounds:
                best[kind] = level
            if not runs:
                continue
            cpu = statistics.median(r.server_cpu for r in runs)
            p50 = statistics.median(percentile(r.probe_ttfb, 50) for r in runs)
            p99 = statistics.median(percentile(r.probe_ttfb, 99) for r in runs)
            print(
                f"  {kind:>9} {level:>5} viewers: held in {wins}/{len(runs)},"
                f" server CPU {cpu * 100:.0f}% of a core ({cpu / level * 1e6:.0f} us/s per viewer),"
                f" TTFB p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms"
            )
    for level in levels:
        ours, base = results.get(("exstream", level)), results.get(("baseline", level))
        if ours and base:
            ratio = statistics.median(r.server_cpu for r in ours) / statistics.median(
                r.server_cpu for r in base
            )
            print(f"  {level} viewers: CPU exstream / baseline = {ratio:.2f}")
    for kind in kinds:
        print(f"  {kind}: held {best.get(kind, 0)} viewers (highest level held in most rounds)")


if __name__ == "__main__":
    sys.exit(main())
