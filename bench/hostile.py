"""Hostile clients: viewers of one real-ffmpeg channel while slow, idle, oversized and
log-tailing connections arrive, one attack after another.

    python -m bench.hostile [--viewers 300] [--seconds 15] [--recovery 10]
                            [--attacks slowloris,idle,bombs,sse] [--connections 1000,bombs=20]

Runs `exstream serve` with one always-on channel (real ffmpeg re-encoding a lavfi
H.264/AAC clip with moving noise to 640x360 at `--mbits`, x264 ultrafast: a steady
rate) and an API token, and `--viewers` viewers of it in a separate uvloop process that
keeps the arrival time of every read. That process also starts a late joiner every
second (a new viewer, closed at its first body byte, failed after 5 s).

Phases, after `--warmup` s: a baseline of `--seconds`, then for each attack: open its
connections (256 connects in flight, at most 30 s), hold them `--seconds`, abort those
still open, and watch `--recovery` s more. The attacks:

- slowloris: a request head sent one byte per connection every `--slowloris-interval` s;
- idle: connections that send nothing;
- bombs: a request head with one unfinished header of `--bomb-mb` MB, written as fast as
  the server reads it (write flow control), then held;
- sse: `GET /api/logs/stream` tails with the API token, reading what comes.

Per phase: the viewers' worst and median rate and their worst delivery gap, viewers cut,
late joiners that got a first byte (and how fast), the server's event-loop lag (p50,
p99 and an upper bound of the worst, from the exstream_event_loop_lag_seconds buckets
between two scrapes), its RSS and open fds (/proc, start/peak/end) and CPU. Per
attack: connects that failed, what the server answered, how many connections it
closed and how soon, how many it held to the end. Last, every phase against the
baseline, and the WARNING/ERROR lines of the server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench._common import (
    bench_parser,
    bucket_quantile,
    cpu_seconds,
    histogram_buckets,
    percentile,
    raise_fd_limit,
    wait_for,
)
from bench._hostile_clients import (
    ATTACKS,
    CONNECT_TIMEOUT,
    FIRST_BYTE_TIMEOUT,
    AttackOutcome,
    Slowloris,
    ViewerWindow,
    attacker_factory,
    close_all,
    drip,
    open_many,
    outcome_of,
    watch,
)
from tests.harness.config import write_config
from tests.harness.server import Server, run_server

LAG = "exstream_event_loop_lag_seconds"
DEFAULT_CONNECTIONS = {"slowloris": 1000, "idle": 2000, "bombs": 20, "sse": 1000}
FLOODS = ("slowloris", "idle", "sse")  # what a bare --connections number sets
RAMP_LIMIT = 30.0  # seconds to open one attack's connections
SAMPLE_EVERY = 0.5  # seconds between samples of the server


def make_noisy_clip(path: Path, seconds: float = 20) -> Path:
    """An H.264/AAC clip from lavfi with moving noise: the channel's x264 then runs at its
    bitrate cap, so the stream's rate is the same from one window to the next."""
    argv = [
        "ffmpeg", "-v", "error", "-y", "-nostdin",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-vf", "noise=alls=30:allf=t+u",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "4M", "-g", "50",
        "-c:a", "aac", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(argv, check=True, timeout=300)
    return path


# --- the server, sampled -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    rss: float  # MB
    fds: int
    cpu: float  # seconds, the server process alone
    lag: dict[float, float] | None  # cumulative buckets; None when /metrics did not answer


@dataclass(frozen=True, slots=True)
class ServerWindow:
    rss: tuple[float, float, float]  # start, peak, end
    fds: tuple[int, int, int]
    cpu: float  # cores
    lag: tuple[float, float, float]  # p50, p99, upper bound of the worst; seconds
    scrapes_failed: int


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def _open_fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


async def sample(pid: int, client: httpx.AsyncClient) -> Sample:
    at = time.monotonic()
    rss, fds = _rss_mb(pid), _open_fds(pid)
    cpu = cpu_seconds(pid)
    try:
        lag: dict[float, float] | None = histogram_buckets((await client.get("/metrics")).text, LAG)
    except httpx.HTTPError:
        lag = None
    return Sample(at, rss, fds, cpu, lag)


async def sample_forever(pid: int, client: httpx.AsyncClient, samples: list[Sample]) -> None:
    while True:
        started = time.monotonic()
        samples.append(await sample(pid, client))
        await asyncio.sleep(max(0.0, started + SAMPLE_EVERY - time.monotonic()))


def worst_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound that holds every observation between two scrapes."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return math.nan
    return next(le for le, count in delta if count >= delta[-1][1])


def server_window(samples: list[Sample], start: float, end: float) -> ServerWindow:
    inside = sorted((s for s in samples if start <= s.at <= end), key=lambda s: s.at)
    scraped = [s.lag for s in inside if s.lag is not None]
    lag = (math.nan, math.nan, math.nan)
    if len(scraped) >= 2:
        first, last = scraped[0], scraped[-1]
        lag = (
            bucket_quantile(first, last, 0.5),
            bucket_quantile(first, last, 0.99),
            worst_bound(first, last),
        )
    span = inside[-1].at - inside[0].at
    return ServerWindow(
        rss=(inside[0].rss, max(s.rss for s in inside), inside[-1].rss),
        fds=(inside[0].fds, max(s.fds for s in inside), inside[-1].fds),
        cpu=(inside[-1].cpu - inside[0].cpu) / span if span > 0 else math.nan,
        lag=lag,
        scrapes_failed=len(inside) - len(scraped),
    )


# --- the viewers' process ----------------------------------------------------------------


@contextlib.contextmanager
def viewer_process(port: int, viewers: int, limit: float) -> Iterator[Connection]:
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    process = spawn.Process(target=watch, args=(port, viewers, theirs, limit), daemon=True)
    process.start()
    theirs.close()
    try:
        yield ours
    finally:
        with contextlib.suppress(OSError):
            ours.send(("stop",))
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join(5)
        ours.close()


def ask(conn: Connection, message: tuple[Any, ...] | None, timeout: float) -> Any:
    if message is not None:
        conn.send(message)
    if not conn.poll(timeout):
        raise SystemExit(f"the viewers' process did not answer within {timeout:g} s")
    return conn.recv()


# --- the phases --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    viewers: ViewerWindow
    server: ServerWindow
    attack: AttackOutcome | None = None


class Bench:
    def __init__(
        self, args: argparse.Namespace, server: Server, viewers: Connection, token: str
    ) -> None:
        self.args = args
        self.server = server
        self.port = server.port
        self.viewers = viewers
        self.token = token
        self.samples: list[Sample] = []
        self.phases: list[Phase] = []
        # Samples reuse one kept-alive connection: a connection cap does not refuse them.
        self.client = httpx.AsyncClient(base_url=server.base_url, timeout=5)

    async def run(self, attacks: dict[str, int]) -> list[Phase]:
        async with self.client:
            sampler = asyncio.create_task(
                sample_forever(self.server.pid, self.client, self.samples)
            )
            try:
                await asyncio.sleep(self.args.warmup)  # past the viewers' join burst
                start = await self.mark()
                await asyncio.sleep(self.args.seconds)
                await self.close_phase("baseline", start)
                for kind, count in attacks.items():
                    start = await self.mark()
                    outcome = await self.attack(kind, count)
                    await self.close_phase(kind, start, outcome)
                    start = await self.mark()
                    await asyncio.sleep(self.args.recovery)
                    await self.close_phase(f"{kind} after", start)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
        return self.phases

    async def mark(self) -> float:
        taken = await sample(self.server.pid, self.client)
        self.samples.append(taken)
        return taken.at

    async def close_phase(
        self, name: str, start: float, attack: AttackOutcome | None = None
    ) -> None:
        end = await self.mark()
        seen = await asyncio.to_thread(ask, self.viewers, ("window", start, end), 60)
        phase = Phase(name, end - start, seen, server_window(self.samples, start, end), attack)
        self.phases.append(phase)
        print(phase_row(phase), flush=True)
        if attack is not None:
            print(f"{'':>17}{attack_line(name, attack, self.args.seconds)}", flush=True)

    async def attack(self, kind: str, count: int) -> AttackOutcome:
        factory = attacker_factory(kind, self.token, int(self.args.bomb_mb * 1e6))
        started = time.monotonic()
        attackers, failed = await open_many(self.port, count, factory, RAMP_LIMIT)
        ramp = time.monotonic() - started
        dripping = None
        if kind == "slowloris":
            slow = [a for a in attackers if isinstance(a, Slowloris)]
            dripping = asyncio.create_task(drip(slow, self.args.slowloris_interval))
        try:
            await asyncio.sleep(self.args.seconds)
            return outcome_of(attackers, count, ramp, failed)
        finally:
            if dripping is not None:
                dripping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dripping
            await close_all(attackers)


# --- the report --------------------------------------------------------------------------

HEADER = (
    f"{'phase':<16} {'s':>4} {'min':>5} {'p50':>5} {'gap s':>6} {'cut':>4} {'joins':>6}"
    f" {'join ms':>7} {'lag p50':>7} {'p99':>6} {'max<=':>6} {'RSS MB start/peak/end':>21}"
    f" {'fds start/peak/end':>18} {'cpu%':>5}"
)


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def phase_row(phase: Phase) -> str:
    seen, server = phase.viewers, phase.server
    joins = f"{len(seen.joined)}/{seen.joins}"
    rss = "/".join(f"{v:.0f}" for v in server.rss)
    fds = "/".join(str(v) for v in server.fds)
    lag = [_ms(v) for v in server.lag]
    failed = f" ({server.scrapes_failed} scrapes failed)" if server.scrapes_failed else ""
    return (
        f"{phase.name:<16} {phase.seconds:4.0f} {min(seen.rates, default=0):5.2f}"
        f" {statistics.median(seen.rates or [0]):5.2f} {max(seen.gaps, default=0):6.2f}"
        f" {seen.cut:>4} {joins:>6} {_ms(percentile(seen.joined, 50)):>7}"
        f" {lag[0]:>7} {lag[1]:>6} {lag[2]:>6} {rss:>21} {fds:>18} {server.cpu * 100:5.0f}{failed}"
    )


def _spread(values: list[float]) -> str:
    return f"{percentile(values, 50):.2f}/{max(values):.2f}" if values else "-"


def _answers(attack: AttackOutcome) -> str:
    return ",".join(f"{s}x{n}" for s, n in sorted(attack.statuses.items())) or "none"


def attack_line(kind: str, attack: AttackOutcome, seconds: float) -> str:
    parts = [f"{attack.opened}/{attack.tried} opened in {attack.ramp:.1f} s"]
    if attack.failed:
        parts.append("connects failed: " + ", ".join(f"{k} x{n}" for k, n in attack.failed.items()))
    parts.append(f"answers {_answers(attack)} (after p50/max {_spread(attack.answered_after)} s)")
    parts.append(
        f"closed by the server {len(attack.closed_after)}"
        f" (after p50/max {_spread(attack.closed_after)} s)"
    )
    parts.append(
        f"open after {seconds:g} s: {attack.held} ({attack.held_unanswered} never answered)"
    )
    if kind == "bombs" and attack.sent:
        parts.append(
            f"MB handed to the kernel each p50 {statistics.median(attack.sent) / 1e6:.1f}"
            f" max {max(attack.sent) / 1e6:.1f}, all of it by {len(attack.sent_all_after)}"
            f" (in p50/max {_spread(attack.sent_all_after)} s)"
        )
    return "; ".join(parts)


def attack_table(phases: list[Phase]) -> None:
    print(
        f"\n{'attack':<10} {'tried':>6} {'opened':>6} {'failed':>6} {'answers':>16}"
        f" {'answer s p50/max':>16} {'closed':>6} {'close s p50/max':>16} {'open':>5}"
        f" {'unanswered':>10}"
    )
    for phase in phases:
        attack = phase.attack
        if attack is None:
            continue
        failed = sum(attack.failed.values())
        print(
            f"{phase.name:<10} {attack.tried:>6} {attack.opened:>6} {failed:>6}"
            f" {_answers(attack):>16} {_spread(attack.answered_after):>16}"
            f" {len(attack.closed_after):>6} {_spread(attack.closed_after):>16}"
            f" {attack.held:>5} {attack.held_unanswered:>10}"
        )


def _ratio(value: float, base: float) -> str:
    if math.isnan(value) or math.isnan(base) or base == 0:
        return ""
    ratio = value / base
    return f"x{ratio:.2f}" if ratio < 10 else f"x{ratio:.0f}"


# (title, figure of a phase, format of the figure)
COLUMNS: list[tuple[str, Callable[[Phase], float], str]] = [
    ("min Mbit/s", lambda p: min(p.viewers.rates, default=0.0), ".2f"),
    ("p50 Mbit/s", lambda p: statistics.median(p.viewers.rates or [0.0]), ".2f"),
    ("worst gap s", lambda p: max(p.viewers.gaps, default=0.0), ".2f"),
    ("lag p99 ms", lambda p: p.server.lag[1] * 1000, ".1f"),
    ("RSS peak MB", lambda p: p.server.rss[1], ".0f"),
    ("fds peak", lambda p: p.server.fds[1], ".0f"),
]


def summary(phases: list[Phase]) -> None:
    base = phases[0]
    print(f"\nagainst the baseline ({base.name}, first row)")
    print(f"{'phase':<16}" + "".join(f" {title:>15}" for title, _, _ in COLUMNS) + "   joins")
    for phase in phases:
        cells = []
        for _, figure, spec in COLUMNS:
            value = figure(phase)
            cells.append(f"{value:{spec}} {_ratio(value, figure(base)):<5}")
        joins = f"{len(phase.viewers.joined)}/{phase.viewers.joins}"
        print(f"{phase.name:<16}" + "".join(f" {cell:>15}" for cell in cells) + f" {joins:>7}")


def log_summary(path: Path) -> None:
    levels: Counter[str] = Counter()
    examples: dict[str, str] = {}
    other = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            other += 1
            continue
        level = str(entry.get("level", "?"))
        levels[level] += 1
        if level in ("WARNING", "ERROR", "CRITICAL"):
            examples.setdefault(str(entry.get("message", ""))[:100], level)
    counts = ", ".join(f"{levels[k]} {k}" for k in ("WARNING", "ERROR", "CRITICAL"))
    print(f"\nserver log: {counts}, {other} lines that are not JSON (tracebacks would be)")
    for message, level in list(examples.items())[:8]:
        print(f"  {level}: {message}")


# --- the driver --------------------------------------------------------------------------


def connection_counts(text: str, attacks: list[str]) -> dict[str, int]:
    counts = dict(DEFAULT_CONNECTIONS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.rpartition("=")
        for kind in [name] if name else FLOODS:
            if kind not in counts:
                raise SystemExit(f"--connections: unknown attack {kind!r}")
            counts[kind] = int(value)
    return {kind: counts[kind] for kind in attacks}


def server_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            options[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            options[key] = raw
    return options


def check_token(server: Server, token: str) -> None:
    """The sse attack means tails that present the token: it must be asked for and taken."""
    answers = []
    for headers in ({"Authorization": f"Bearer {token}"}, {}):
        with server.client() as client:
            answers.append(client.get("/api/logs/entries", headers=headers).status_code)
    if answers != [200, 401]:
        raise SystemExit(
            f"GET /api/logs/entries answered {answers[0]} with the token and {answers[1]}"
            " without it (expected 200 and 401)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        __doc__, "Load is loopback only, bounded by the counts and the time options."
    )
    parser.add_argument("--viewers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=15.0, help="baseline and each attack")
    parser.add_argument("--recovery", type=float, default=10.0, help="seconds after each attack")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the baseline")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated, in order")
    parser.add_argument(
        "--connections",
        default="",
        help="per attack, e.g. 'idle=500,bombs=5'; a bare number sets slowloris, idle and sse"
        f" (defaults: {', '.join(f'{k}={v}' for k, v in DEFAULT_CONNECTIONS.items())})",
    )
    parser.add_argument("--slowloris-interval", type=float, default=3.0, help="s between bytes")
    parser.add_argument("--bomb-mb", type=float, default=20.0, help="header size of each bomb")
    parser.add_argument("--mbits", type=float, default=1.0, help="channel video bitrate")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra [server] key for the config (TOML value), repeatable",
    )
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    if unknown := set(attacks) - set(ATTACKS):
        raise SystemExit(f"--attacks: unknown {sorted(unknown)} (known: {', '.join(ATTACKS)})")
    counts = connection_counts(args.connections, attacks)
    limit = raise_fd_limit()
    if max(counts.values(), default=0) + 200 > limit:
        raise SystemExit(f"the open-file limit ({limit}) is too low for {max(counts.values())}")
    token = secrets.token_urlsafe(24)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        media = root / "media"
        media.mkdir()
        make_noisy_clip(media / "clip.mp4")
        channel = {"number": 1, "name": "Hostile", "media": [str(media)], "mode": "always_on"}
        config = write_config(
            root,
            [channel],
            server=server_options(args.server),
            ffmpeg={
                "width": 640, "height": 360, "preset": "ultrafast",
                "video_bitrate": int(args.mbits * 1e6),
            },
        )  # fmt: skip
        with run_server(config, {"EXSTREAM_API_TOKEN": token}, log_level="INFO") as server:
            wait_for(lambda: server.channel(1)["state"] == "running", 60, "channel 1 to run")
            if "sse" in counts:
                check_token(server, token)
            print(
                f"server pid {server.pid} (open files limit {_open_files_limit(server.pid)});"
                f" one always-on channel, real ffmpeg (640x360 ultrafast,"
                f" video {args.mbits:g} Mbit/s); {args.viewers} viewers; attacks"
                f" {', '.join(f'{k} x{n}' for k, n in counts.items())};"
                f" [server] extra {server_options(args.server) or 'none'}",
                flush=True,
            )
            budget = (args.seconds + args.recovery + RAMP_LIMIT + 90) * (len(attacks) + 1)
            with viewer_process(server.port, args.viewers, budget) as viewers:
                _, opened, streaming = ask(
                    viewers, None, FIRST_BYTE_TIMEOUT + CONNECT_TIMEOUT * args.viewers / 64 + 60
                )
                print(f"viewers: {opened} connected, {streaming} streaming", flush=True)
                print(HEADER, flush=True)
                bench = Bench(args, server, viewers, token)
                phases = uvloop.run(bench.run(counts))
            summary(phases)
            attack_table(phases)
            log_summary(server.log_path)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
