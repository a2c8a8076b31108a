"""HLS through an nginx edge vs MPEG-TS direct: what each viewer costs the origin, in one run.

    python -m bench.hls [--clients 100,250,500] [--seconds 20] [--mbits 2]

One exstream server (one always-on channel: real ffmpeg re-encoding a lavfi clip with
libx264 veryfast to 640x360 at `--mbits` Mbit/s) and, in front of it, nginx running
deploy/nginx/edge.conf. For each level N, lowest first, once nobody watches:

- ts: N viewers of /stream/1.ts straight from exstream (bench.fanout's load generator:
  one raw connection per viewer that counts bytes), measured for `--seconds` s after
  `--warmup` s. Goodput: each viewer's Mbit/s.
- hls: N players through the edge (tests/harness/hlsplayer.py, the one tests/e2e/test_hls.py
  runs: one raw keep-alive connection each, the media playlist reloaded once a target
  duration, each new segment fetched once and its bytes counted, not kept), arriving over
  `--arrivals` s, then measured for `--seconds` s. Goodput: seconds of
  media each player fetched per second it watched (about 1.0 keeps up; the first
  segment is fetched at once and none in the last reload interval, so +-1 segment).

Measured over the window: the exstream process's CPU (psutil, its ffmpeg children
excluded), nginx's (master and workers), the load generator's (its own process) and the
whole machine's, all in % of one core (the machine has 200% on 2 cores); the origin's
HLS requests (exstream_hls_requests_total: playlists per second, and segment fetches
over the whole level against the distinct segments the players fetched). The load
generator runs on the same machine as the servers and competes with them for its cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench._common import bench_parser, busy_seconds, cpu_seconds, make_ts_clip, raise_fd_limit
from bench._common import wait_for as bench_wait_for
from bench.fanout import LevelResult, run_loadgen
from tests.harness.config import write_config
from tests.harness.hlsplayer import edge_in_front, player
from tests.harness.server import Server, run_server

PLAYLIST = "/stream/1.m3u8"


@dataclass
class HlsResult:
    players: int
    failures: list[str]  # why each failed player stopped
    realtime: list[float]  # per player that finished: media seconds fetched / seconds watched
    distinct: int  # segments the players fetched between them
    origin_segments: float  # segment requests the origin answered over the whole level
    playlists_per_second: float  # at the origin, over the window
    server_cpu: float  # cores
    nginx_cpu: float
    loadgen_cpu: float
    machine_cpu: float


def hls_counts(metrics_text: str) -> dict[str, float]:
    """exstream_hls_requests_total by kind, every channel and outcome together."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "exstream_hls_requests_total":
                kind = sample.labels["kind"]
                counts[kind] = counts.get(kind, 0.0) + sample.value
    return counts


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live children (nginx: the master and its workers)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(proc.pid)
    return total


async def _watch(
    edge: str,
    origin: str,
    players: int,
    arrivals: float,
    seconds: float,
    segment_seconds: float,
    pids: tuple[int, int],
) -> HlsResult:
    server_pid, nginx_pid = pids
    seen: set[str] = set()
    async with httpx.AsyncClient(base_url=origin, timeout=10) as scraper:

        async def counts() -> dict[str, float]:
            return hls_counts((await scraper.get("/metrics")).text)

        loop = asyncio.get_running_loop()
        first = await counts()
        started = loop.time()
        until = started + arrivals + seconds
        starts = [i * arrivals / players for i in range(players)]
        watching = asyncio.gather(
            *(player(edge, seen, start, until, PLAYLIST) for start in starts),
            return_exceptions=True,
        )
        await asyncio.sleep(arrivals)
        before = await counts()
        server, edge_cpu = cpu_seconds(server_pid), tree_cpu_seconds(nginx_pid)
        own, machine, window = time.process_time(), busy_seconds(), loop.time()
        await asyncio.sleep(max(0.0, until - loop.time()))
        elapsed = loop.time() - window
        server = (cpu_seconds(server_pid) - server) / elapsed
        edge_cpu = (tree_cpu_seconds(nginx_pid) - edge_cpu) / elapsed
        own = (time.process_time() - own) / elapsed
        machine = (busy_seconds() - machine) / elapsed
        after = await counts()
        async with asyncio.timeout(60):  # the fetches of each player's last load
            outcomes = await watching
        last = await counts()
    failures = [f"{type(o).__name__}: {o}"[:200] for o in outcomes if isinstance(o, BaseException)]
    realtime = [
        o * segment_seconds / (until - started - start)
        for o, start in zip(outcomes, starts, strict=True)
        if isinstance(o, int)
    ]
    return HlsResult(
        players=players,
        failures=failures,
        realtime=realtime,
        distinct=len(seen),
        origin_segments=last.get("segment", 0.0) - first.get("segment", 0.0),
        playlists_per_second=(after.get("playlist", 0.0) - before.get("playlist", 0.0)) / elapsed,
        server_cpu=server,
        nginx_cpu=edge_cpu,
        loadgen_cpu=own,
        machine_cpu=machine,
    )


def run_players(
    edge: str,
    origin: str,
    players: int,
    arrivals: float,
    seconds: float,
    segment_seconds: float,
    pids: tuple[int, int],
) -> HlsResult:
    """HLS players in a process of their own (bench.fanout's load generator's twin)."""
    import uvloop

    raise_fd_limit()
    return uvloop.run(_watch(edge, origin, players, arrivals, seconds, segment_seconds, pids))


# --- the driver -----------------------------------------------------------------------


@contextlib.contextmanager
def origin_and_edge(root: Path, mbits: float) -> Iterator[tuple[Server, str, int]]:
    """exstream with one always-on channel and nginx's edge in front: (server, edge URL,
    nginx's pid), once the channel's playlist lists a segment."""
    media = root / "media"
    media.mkdir()
    make_ts_clip(media / "clip.ts", seconds=60, mbits=mbits)
    config = write_config(
        root,
        [{"number": 1, "name": "Bench", "media": [str(media)], "mode": "always_on"}],
        ffmpeg={"width": 640, "height": 360, "video_bitrate": int(mbits * 1e6)},
    )
    with (
        run_server(config, log_level="INFO", stop_timeout=30) as server,
        edge_in_front(server, root / "nginx") as (edge, master),
    ):
        bench_wait_for(lambda: server.get(PLAYLIST).status_code == 200, 60, "a playlist")
        yield server, edge, master.pid


def mean_segment_seconds(server: Server) -> float:
    durations = [
        float(line.split(":", 1)[1].rstrip(","))
        for line in server.get(PLAYLIST).text.splitlines()
        if line.startswith("#EXTINF:")
    ]
    return statistics.mean(durations)


def nobody_watches(server: Server) -> None:
    """Until the channel has no viewer: HLS sessions end three target durations after their
    last request, and segments are only cut while there are some."""
    bench_wait_for(lambda: server.channel(1)["viewers"] == 0, 60, "the channel's viewers to leave")


def idle_cpu(server: Server, seconds: float) -> float:
    """The exstream process's CPU (cores) with its channel playing and nobody watching."""
    before, started = cpu_seconds(server.pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(server.pid) - before) / (time.monotonic() - started)


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def per_client(cpu: float, idle: float, clients: int) -> float:
    """What each client adds to the origin's CPU, in microseconds per second."""
    return (cpu - idle) / clients * 1e6


def ts_row(level: int, r: LevelResult, idle: float) -> str:
    rates = r.rates or [0.0]
    return (
        f"{level:>7} {'ts':>4} {r.server_cpu * 100:6.1f}"
        f" {per_client(r.server_cpu, idle, level):9.0f}"
        f" {'-':>6} {r.loadgen_cpu * 100:8.1f} {r.machine_cpu * 100:8.0f}"
        f"   {statistics.median(rates):5.2f} / {min(rates):5.2f} Mbit/s"
        f"   viewers {r.connected - r.lost}/{level} streaming"
    )


def hls_row(level: int, r: HlsResult, idle: float) -> str:
    realtime = r.realtime or [0.0]
    return (
        f"{level:>7} {'hls':>4} {r.server_cpu * 100:6.1f}"
        f" {per_client(r.server_cpu, idle, level):9.0f}"
        f" {r.nginx_cpu * 100:6.1f} {r.loadgen_cpu * 100:8.1f} {r.machine_cpu * 100:8.0f}"
        f"   {statistics.median(realtime):5.2f} / {min(realtime):5.2f} x realtime"
        f"   players failed {len(r.failures)}/{level}; origin {r.origin_segments:g} segment"
        f" fetches for {r.distinct} distinct, {r.playlists_per_second:.1f} playlists/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        __doc__,
        "Load is loopback only, bounded by --clients and the time options. The load"
        " generator runs on this machine too, and competes with the servers for its cores.",
    )
    parser.add_argument("--clients", default="100,250,500", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="ts viewers before the window")
    parser.add_argument("--arrivals", type=float, default=2.0, help="hls players arrive over")
    parser.add_argument("--mbits", type=float, default=2.0, help="the channel's video bit rate")
    args = parser.parse_args(argv)
    levels = sorted(int(v) for v in args.clients.split(","))
    limit = raise_fd_limit()
    if max(levels) * 3 + 200 > limit:
        raise SystemExit(f"the open-file limit ({limit}) is too low for {max(levels)} clients")
    spawn = multiprocessing.get_context("spawn")
    hls: dict[int, HlsResult] = {}
    ts: dict[int, LevelResult] = {}
    loads = [load_average()]
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessPoolExecutor(1, mp_context=spawn) as pool,
        origin_and_edge(Path(tmp), args.mbits) as (server, edge, nginx_pid),
    ):
        segment = mean_segment_seconds(server)
        nobody_watches(server)
        idle = idle_cpu(server, args.seconds)
        print(
            f"channel: real ffmpeg, 640x360 at {args.mbits:g} Mbit/s video, HLS segments"
            f" of {segment:.2f} s; levels {levels}; {args.seconds:g} s windows;"
            f" exstream pid {server.pid}, nginx pid {nginx_pid}; load average {loads[0]}",
            flush=True,
        )
        print(
            f"exstream alone (the channel playing, no viewer): {idle * 100:.1f}% of a core;"
            " us/s/each is what each client adds to that",
            flush=True,
        )
        print(
            "the load generator runs on this machine too: its CPU is in loadgen%,"
            " and all of it in machine% (of 100% per core)",
            flush=True,
        )
        print(
            f"{'clients':>7} {'mode':>4} {'cpu%':>6} {'us/s/each':>9} {'nginx%':>6}"
            f" {'loadgen%':>8} {'machine%':>8}   goodput median / min",
            flush=True,
        )
        budget = args.warmup + args.arrivals + args.seconds + 180
        for level in levels:
            nobody_watches(server)
            ts[level] = pool.submit(
                run_loadgen, server.port, level, args.warmup, args.seconds, 0, server.pid
            ).result(timeout=budget)
            print(ts_row(level, ts[level], idle), flush=True)
            nobody_watches(server)
            hls[level] = pool.submit(
                run_players,
                edge,
                server.base_url,
                level,
                args.arrivals,
                args.seconds,
                segment,
                (server.pid, nginx_pid),
            ).result(timeout=budget)
            print(hls_row(level, hls[level], idle), flush=True)
            for failure in sorted(set(hls[level].failures))[:3]:
                print(f"        failed: {failure}", flush=True)
            loads.append(load_average())
    summarise(hls, ts, levels, loads, idle)
    return 0


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def summarise(
    hls: dict[int, HlsResult],
    ts: dict[int, LevelResult],
    levels: list[int],
    loads: list[str],
    idle: float,
) -> None:
    print(
        f"\norigin (exstream) CPU, HLS through the edge vs MPEG-TS direct"
        f" (idle {idle * 100:.1f}% of a core; each = added per client):"
    )
    for level in levels:
        h, t = hls[level], ts[level]
        hls_each, ts_each = (
            per_client(h.server_cpu, idle, level),
            per_client(t.server_cpu, idle, level),
        )
        print(
            f"  {level:>5} clients: hls {h.server_cpu * 100:5.1f}% of a core"
            f" ({hls_each:.0f} us/s each) + nginx {h.nginx_cpu * 100:.1f}%;"
            f" ts {t.server_cpu * 100:5.1f}% ({ts_each:.0f} us/s each);"
            f" hls / ts = {ratio(h.server_cpu, t.server_cpu):.2f} total,"
            f" {ratio(hls_each, ts_each):.2f} per client"
        )
    print(f"load average (1, 5, 15 min) at the start and after each level: {' | '.join(loads)}")


if __name__ == "__main__":
    sys.exit(main())
