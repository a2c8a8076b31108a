"""Restart storm: every process of 200 always-on channels killed at once.

    python -m bench.storm [--channels 200] [--spawn-rate 10] [--spawn-burst 10]

Runs `exstream serve` with `--channels` always-on channels whose "ffmpeg" is the tests'
stand-in (tests/harness/fake_ffmpeg.py started with python -S, writing a PAT and null
MPEG-TS packets at `--kbytes` kB/s; it logs each spawn's time). Once
every channel runs, it SIGKILLs every process group at once (pids from
GET /api/channels) and prints:

- the spawn rate per second from the spawn log, and whether it ever exceeded the
  token bucket ([pool] spawn_rate, spawn_burst): over any interval of length T the
  bucket allows at most burst + rate * T spawns;
- the time until every channel runs again with a new process;
- event-loop lag p50/p99 during the storm, from the exstream_event_loop_lag_seconds
  histogram (bucket deltas between a scrape before the kill and one after recovery,
  interpolated inside buckets as histogram_quantile does; the probe runs every 0.5 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    bench_parser,
    bucket_quantile,
    histogram_buckets,
    raise_fd_limit,
    wait_for,
)
from tests.harness.config import write_config
from tests.harness.server import run_server
from tests.harness.standin import spawns, write_stand_in

LAG = "exstream_event_loop_lag_seconds"
UP = ("running", "slate")


def channels(client: httpx.Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = client.get("/api/channels").json()["channels"]
    return listed


def worst_excess(times: list[float], rate: float, burst: int) -> float:
    """The most spawns seen in any interval beyond what the bucket allows (<= 0: never)."""
    worst = float("-inf")
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (burst + rate * (times[j] - start)))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--spawn-rate", type=float, default=10.0, help="[pool] spawn_rate")
    parser.add_argument("--spawn-burst", type=int, default=10, help="[pool] spawn_burst")
    parser.add_argument("--kbytes", type=float, default=20.0, help="stand-in output, kB/s")
    parser.add_argument("--calm", type=float, default=15.0, help="seconds measured before")
    parser.add_argument("--timeout", type=float, default=300.0, help="limit per phase, s")
    args = parser.parse_args(argv)
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "media").mkdir()
        log = root / "spawns.log"
        standin = write_stand_in(root / "ffmpeg-standin", rate=args.kbytes * 1000, log=log)
        config = write_config(
            root,
            [
                {"number": n, "name": f"Storm {n}", "media": [str(root / "media")],
                 "mode": "always_on"}
                for n in range(1, args.channels + 1)
            ],
            encoding={},
            ffmpeg={"ffmpeg": str(standin)},
            pool={
                "max_processes": args.channels + 16,
                "spawn_rate": args.spawn_rate,
                "spawn_burst": args.spawn_burst,
            },
        )  # fmt: skip
        print(
            f"{args.channels} always-on channels, stand-in processes (python -S, null packets at"
            f" {args.kbytes:g} kB/s); [pool] spawn_rate {args.spawn_rate:g}/s,"
            f" spawn_burst {args.spawn_burst}",
            flush=True,
        )
        started = time.monotonic()
        with (
            run_server(config, log_level="WARNING", stop_timeout=30) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as client,
        ):

            def all_up(old: dict[int, int] | None = None) -> dict[int, int] | None:
                listed = channels(client)
                pids = {c["number"]: c["pid"] for c in listed if c["state"] in UP and c["pid"]}
                if len(pids) < args.channels:
                    return None
                if old and any(pids[n] == old[n] for n in pids):
                    return None
                return pids

            pids = wait_for(all_up, args.timeout, "every channel to start", interval=0.2)
            print(f"initial start: all {args.channels} up after {time.monotonic() - started:.1f} s")
            print(f"server pid {server.pid}", flush=True)
            # The same polling, without a storm: the lag of this machine and this load.
            calm = histogram_buckets(client.get("/metrics").text, LAG)
            until = time.monotonic() + args.calm
            while time.monotonic() < until:
                all_up()
                time.sleep(0.2)
            before_lag = histogram_buckets(client.get("/metrics").text, LAG)
            killed_at = time.time()
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            kill_mono = time.monotonic()
            wait_for(lambda: all_up(pids), args.timeout, "every channel to restart", interval=0.2)
            recovered = time.monotonic() - kill_mono
            after_lag = histogram_buckets(client.get("/metrics").text, LAG)
        storm = sorted(t for t in spawns(log) if t >= killed_at)
    print(f"killed {len(pids)} process groups at once; all {args.channels} running again after"
          f" {recovered:.1f} s; {len(storm)} spawns since the kill")  # fmt: skip
    per_second = Counter(int(t - killed_at) for t in storm)
    last = max(per_second, default=0)
    print("spawns per second after the kill:", " ".join(
        f"{per_second.get(s, 0)}" for s in range(last + 1)))  # fmt: skip
    excess = worst_excess(storm, args.spawn_rate, args.spawn_burst)
    # The log is written by each child after exec and interpreter start: allow one spawn
    # of jitter in any window.
    verdict = "never exceeded" if excess <= 1 else f"EXCEEDED by {excess:.1f} spawns"
    print(
        f"spawn rate vs the bucket (burst {args.spawn_burst} + {args.spawn_rate:g}/s over any"
        f" interval): {verdict}; peak {max(per_second.values(), default=0)} in one second"
    )
    for name, (scrape_a, scrape_b) in {
        f"{args.calm:g} s before the kill (no storm)": (calm, before_lag),
        "during the storm": (before_lag, after_lag),
    }.items():
        probes = max(scrape_b.values()) - max(scrape_a.values())
        p50, p99 = (bucket_quantile(scrape_a, scrape_b, q) for q in (0.5, 0.99))
        print(
            f"event-loop lag {name} ({probes:.0f} probes): p50 {p50 * 1000:.1f} ms,"
            f" p99 {p99 * 1000:.1f} ms"
        )
    print("goal: p99 < 50 ms during the storm")
    return 0 if excess <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
