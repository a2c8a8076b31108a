"""Continuity under faults: one viewer records an always-on channel for minutes while
its ffmpeg is killed, stopped and restarted at random; what reached the viewer.

    python -m bench.continuity [--minutes 2] [--item-seconds 20] [--seed 1] [--baseline REV]

Makes the mixed library of tests/e2e/library.py (H.264/AAC mp4, MPEG-4/MP3 avi,
video-only mkv, MPEG-2/AC-3 interlaced ts, audio-only mp3, m4a with cover art, HEVC,
VP9/FLAC, two audio tracks; `--item-seconds` each) in a temporary directory and runs
`exstream serve` (real ffmpeg, `--size` at `--fps`, x264 `--preset`) with one always-on
channel playing it, short health settings (stall_timeout 2 s, check_interval 0.5 s,
backoff 0.1-0.5 s, a restart budget no random fault can spend) and `--segment-max`.

While one viewer records the whole stream with the arrival time of every chunk, a
seeded fault injector does one thing every `--fault-min` to `--fault-max` seconds
(none in the last `--settle` seconds): SIGKILL the channel's process group, SIGSTOP it
(the health check must see the stall), or POST /api/channels/1/restart. The channel's
state is polled every 0.5 s, and the CPU time of the server and of every descendant
(ffmpeg, ffprobe) is sampled every 0.2 s: per process, its largest value counts, so a
process that exited still counts as far as it was seen. Per-item processes can live
less than a sample, so the kernel's count is printed too: the CPU time of the server's
reaped children plus that of its live ones (exact, but not by name).

At the end it prints: the faults, the worst delivery gap, what tests/e2e/wire.py finds
on the capture (video/audio timestamp jumps, continuity counter breaks, PCR problems),
ffmpeg's decode errors on it (cut at a clean point), A/V offsets from the library's
flash/beep marks (also by the item scheduled when each arrived), drift (video frames /
fps against the wall clock: end to end, which includes the join burst, and the slope
fitted after the first 10 s, in ppm and s/hour), the channel states seen, filler
seconds by reason, skipped items, restarts, and CPU in % of one core.

--baseline REV checks REV out into a temporary git worktree (`git worktree add`) and
runs the same scenario (same library, same fault plan) against that code, then prints
both side by side with new/baseline ratios. The server runs with the repository's venv
and PYTHONSAFEPATH=1, PYTHONPATH=<tree>, so `python -m service` is the tree's code.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench._common import ROOT, bench_parser, wait_for
from service.mpegts import (
    PACKET_SIZE,
    VIDEO_STREAM_TYPES,
    packets,
    parse_pat,
    parse_pmt,
    payload_unit_start,
    pid,
)
from tests.e2e.library import PAIR_WINDOW, _marks, make_library
from tests.e2e.tsutil import cut_clean
from tests.e2e.wire import check_capture, worst_gap
from tests.harness.config import FAST_HEALTH, write_config
from tests.harness.server import Server, run_server
from tests.harness.viewer import Viewer

KINDS = ("kill", "stop", "restart")
SAMPLE = 0.5  # seconds between state polls
CPU_SAMPLE = 0.2  # seconds between CPU samples: per-item processes can be short-lived
WARMUP = 10.0  # seconds of capture left out of the drift fit (the join burst)
CHANNEL = 1


# -- the viewer, the pollers ---------------------------------------------------------------


class StatePoller(threading.Thread):
    """GET /api/channels/N every SAMPLE s: state and item changes, the work-ahead."""

    def __init__(self, server: Server, number: int, done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.number = number
        self.done = done
        self.changes: list[tuple[float, str]] = []
        self.samples: Counter[str] = Counter()
        self.workahead: list[float] = []
        self.items: list[tuple[float, str]] = []  # (when, file name) of each item change

    def run(self) -> None:
        with self.server.client(timeout=5) as client:
            while not self.done.wait(SAMPLE):
                try:
                    status = client.get(f"/api/channels/{self.number}").json()
                    state = str(status["state"])
                    if isinstance(status.get("workahead_seconds"), int | float):
                        self.workahead.append(float(status["workahead_seconds"]))
                    item = Path(str((status.get("current") or {}).get("path", "-"))).name
                    if not self.items or self.items[-1][1] != item:
                        self.items.append((time.monotonic(), item))
                except (httpx.HTTPError, ValueError, KeyError):
                    state = "(api error)"
                self.samples[state] += 1
                if not self.changes or self.changes[-1][1] != state:
                    self.changes.append((time.monotonic(), state))


class CpuSampler(threading.Thread):
    """Cumulative CPU (user + system) of the server and each descendant every CPU_SAMPLE s.

    Per process (pid, start time) the largest value seen counts, less its value at the
    first sample if it already ran then: a process that exits between samples loses
    only what it used since the last one.
    """

    def __init__(self, server_pid: int, done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.done = done
        self.peak: dict[tuple[int, float], float] = {}
        self.names: dict[tuple[int, float], str] = {}
        self.before: dict[tuple[int, float], float] = {}
        self.server_first = self.server_last = 0.0
        # The kernel's count: the server's reaped children plus its live descendants.
        self.kernel_first = self.kernel_last = 0.0
        self.first_at = self.last_at = 0.0
        self.machine_first = self.machine_last = 0.0  # busy CPU seconds, all cores

    def sample(self) -> None:
        try:
            server = psutil.Process(self.server_pid)
            own = server.cpu_times()
            children = server.children(recursive=True)
        except psutil.Error:
            return
        live = 0.0
        for child in children:
            with contextlib.suppress(psutil.Error):
                key = (child.pid, child.create_time())
                times = child.cpu_times()
                used = times.user + times.system
                if key not in self.names:
                    self.names[key] = child.name()
                    if not self.first_at:
                        self.before[key] = used
                self.peak[key] = max(self.peak.get(key, 0.0), used)
                live += used
        server_used = own.user + own.system
        kernel = own.children_user + own.children_system + live
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        now = time.monotonic()
        if not self.first_at:
            self.server_first, self.kernel_first, self.machine_first = server_used, kernel, busy
            self.first_at = now
        self.server_last, self.kernel_last, self.machine_last = server_used, kernel, busy
        self.last_at = now

    def run(self) -> None:
        self.sample()
        while not self.done.wait(CPU_SAMPLE):
            self.sample()
        self.sample()

    def by_name(self) -> dict[str, tuple[float, int]]:
        """CPU seconds and process count per process name, over the sampled window."""
        totals: dict[str, tuple[float, int]] = {}
        for key, used in self.peak.items():
            seconds, count = totals.get(self.names[key], (0.0, 0))
            totals[self.names[key]] = (seconds + used - self.before.get(key, 0.0), count + 1)
        return totals


# -- faults --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the viewer's first byte
    kind: str


def fault_plan(
    seed: int, seconds: float, low: float, high: float, settle: float, kinds: tuple[str, ...]
) -> list[Fault]:
    """Faults every `low`..`high` s, none in the last `settle` s: the same for every run."""
    rng = random.Random(seed)
    plan: list[Fault] = []
    at = rng.uniform(low, high)
    while at < seconds - settle:
        plan.append(Fault(at, rng.choice(kinds)))
        at += rng.uniform(low, high)
    return plan


def signal_group(client: httpx.Client, signum: int, timeout: float = 15.0) -> tuple[int, float]:
    """Send `signum` to the channel's current process group: its (pid, start time). The
    pid read from the API may have just ended (items follow one another): read again."""

    def send() -> tuple[int, float] | None:
        number: int | None = client.get(f"/api/channels/{CHANNEL}").json()["pid"]
        if number is None:
            return None
        try:
            started = psutil.Process(number).create_time()
            os.killpg(number, signum)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return None
        return number, started

    return wait_for(send, timeout, f"a process of channel {CHANNEL} to signal", interval=0.1)


def inject(client: httpx.Client, kind: str, stopped: list[tuple[int, float]]) -> str:
    if kind == "restart":
        response = client.post(f"/api/channels/{CHANNEL}/restart")
        return f"POST restart: HTTP {response.status_code}"
    signum = signal.SIGKILL if kind == "kill" else signal.SIGSTOP
    try:
        number, started = signal_group(client, signum)
    except SystemExit as exc:
        return f"not sent ({exc})"
    if kind == "stop":
        stopped.append((number, started))
    return f"{signal.Signals(signum).name} to process group {number}"


def release(stopped: list[tuple[int, float]]) -> int:
    """SIGKILL the groups we stopped that are somehow still there (same pid, same start)."""
    left = 0
    for number, started in stopped:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if psutil.Process(number).create_time() == started:
                os.killpg(number, signal.SIGKILL)
                left += 1
    return left


# -- reading the capture ---------------------------------------------------------------------


def frame_arrivals(data: bytes, arrivals: list[tuple[float, int]]) -> list[float]:
    """When each video frame (a PES start on the video PID) reached the viewer."""
    ends: list[int] = []
    total = 0
    for _, size in arrivals:
        total += size
        ends.append(total)
    pmt_pids: set[int] = set()
    video: int | None = None
    times: list[float] = []
    for index, packet in enumerate(packets(data)):
        if not payload_unit_start(packet):
            continue
        packet_pid = pid(packet)
        if packet_pid == video:
            chunk = bisect.bisect_right(ends, index * PACKET_SIZE)
            times.append(arrivals[min(chunk, len(arrivals) - 1)][0])
        elif packet_pid == 0:
            pmt_pids = set(parse_pat(packet)) or pmt_pids
        elif packet_pid in pmt_pids:
            streams = parse_pmt(packet)
            video = next((p for p, k in streams.items() if k in VIDEO_STREAM_TYPES), video)
    return times


def fitted_rate(times: list[float], fps: int, skip: float) -> float | None:
    """Media seconds per wall second: least squares of frame index against arrival time,
    frames that arrived in the first `skip` seconds left out."""
    if not times:
        return None
    start = times[0] + skip
    points = [(t, k) for k, t in enumerate(times) if t >= start]
    if len(points) < 2 * fps:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_k = statistics.fmean(k for _, k in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (k - mean_k) for t, k in points)
    return cov / var / fps if var else None


def marked_offsets(path: Path) -> list[tuple[float, float]]:
    """(flash time, audio minus video seconds) of each flash with a beep within
    PAIR_WINDOW: the pairs tests.e2e.library.av_offsets measures, with where they are."""
    flash_times, beep_times = _marks(path)
    pairs = []
    for flash in flash_times:
        nearest = min(beep_times, key=lambda beep: abs(beep - flash), default=None)
        if nearest is not None and abs(nearest - flash) <= PAIR_WINDOW:
            pairs.append((flash, nearest - flash))
    return pairs


def offsets_by_item(
    offsets: list[tuple[float, float]],
    frames: list[float],
    items: list[tuple[float, str]],
    fps: int,
) -> dict[str, list[float]]:
    """Offsets grouped by the item scheduled when their flash reached the viewer (the
    flash's time in the capture taken as frames since its start: exact while timestamps
    run on, approximate after a jump)."""
    grouped: dict[str, list[float]] = {}
    if not frames or not items:
        return grouped
    changes = [at for at, _ in items]
    for flash, offset in offsets:
        arrived = frames[min(int(flash * fps), len(frames) - 1)]
        item = items[max(0, bisect.bisect_right(changes, arrived) - 1)][1]
        grouped.setdefault(item, []).append(offset)
    return grouped


def decode_errors(path: Path, timeout: float) -> list[str]:
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return [line for line in result.stderr.splitlines() if line.strip()]


def metric_by(text: str, name: str, label: str) -> dict[str, float] | None:
    """Samples of `name` for the channel, summed by `label`; None if not exported at all."""
    if name not in text:
        return None
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("channel") == str(CHANNEL):
                key = sample.labels.get(label, "")
                values[key] = values.get(key, 0.0) + sample.value
    return values


# -- one run -------------------------------------------------------------------------------


Row = tuple[str, str, float | None]  # label, text, a number to take a ratio of (or None)


@dataclass
class Outcome:
    name: str
    rows: list[Row]
    problems: list[str]  # a few examples of what was found, for the reader

    def row(self, label: str, text: str, number: float | None = None) -> None:
        self.rows.append((label, text, number))

    def examples(self, kind: str, items: list[str], limit: int = 2) -> None:
        self.problems += [f"{kind}: {text}" for text in items[:limit]]


def _counts(values: dict[str, float] | None, unit: str = "") -> str:
    if values is None:
        return "n/a (not exported)"
    shown = [f"{k} {v:g}{unit}" for k, v in sorted(values.items()) if v]
    return ", ".join(shown) if shown else "0"


@contextlib.contextmanager
def worktree(rev: str, directory: Path) -> Iterator[Path]:
    """`rev` checked out (detached) into a temporary git worktree."""
    tree = directory / "baseline-tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), rev],
        check=True,
        timeout=120,
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            timeout=120,
        )


def _git(tree: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip()


def describe(tree: Path) -> str:
    text = _git(tree, "log", "-1", "--format=%h %s")[:70]
    dirty = _git(tree, "status", "--porcelain", "--untracked-files=no")
    return f"{text} + uncommitted changes" if dirty else text


def run(
    name: str,
    tree: Path,
    library: list[Path],
    plan: list[Fault],
    args: argparse.Namespace,
    root: Path,
) -> Outcome:
    root.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))
    config = write_config(
        root,
        [
            {
                "number": CHANNEL,
                "name": "Continuity",
                "media": [str(p) for p in library],
                "mode": "always_on",
            }
        ],
        ffmpeg={
            "width": width,
            "height": height,
            "fps": args.fps,
            "preset": args.preset,
            "video_bitrate": args.video_kbps * 1000,
        },
        playout={"segment_max": float(args.segment_max), "min_horizon": 3600.0},
        health={**FAST_HEALTH, "max_restarts": 1000},
    )
    env = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(tree)}
    capture = root / "capture.ts"
    stopped: list[tuple[int, float]] = []
    injected: list[tuple[float, str, str]] = []
    seconds = args.minutes * 60
    print(f"[{name}] {describe(tree)}: starting the server", flush=True)
    started = time.monotonic()
    with (
        run_server(config, env, log_level="INFO", ready_timeout=120) as server,
        server.client() as client,
    ):

        def running() -> bool:
            return bool(client.get(f"/api/channels/{CHANNEL}").json()["state"] == "running")

        wait_for(running, 120, f"channel {CHANNEL} to run", interval=0.2)
        print(
            f"[{name}] channel running after {time.monotonic() - started:.1f} s; recording"
            f" {seconds:g} s",
            flush=True,
        )
        done = threading.Event()
        viewer = Viewer(server, CHANNEL, capture)
        states = StatePoller(server, CHANNEL, done)
        cpu = CpuSampler(server.pid, done)
        cpu.sample()  # the window starts now
        viewer.start()
        states.start()
        cpu.start()
        try:
            wait_for(lambda: viewer.arrivals, 30, "the viewer's first bytes")
            zero = viewer.arrivals[0][0]
            pending = list(plan)
            while time.monotonic() < zero + seconds and viewer.is_alive():
                if pending and time.monotonic() >= zero + pending[0].at:
                    fault = pending.pop(0)
                    at = time.monotonic() - zero
                    result = inject(client, fault.kind, stopped)
                    injected.append((at, fault.kind, result))
                    print(f"[{name}] +{at:6.1f} s {fault.kind}: {result}", flush=True)
                time.sleep(0.1)
        finally:
            viewer.finish()
            done.set()
            states.join(10)
            cpu.join(10)
        metrics = client.get("/metrics").text
        channel = client.get(f"/api/channels/{CHANNEL}").json()
        log_tail = server.log()[-2000:]
    leftover = release(stopped)
    if viewer.error is not None or viewer.status != 200:
        print(f"[{name}] viewer: HTTP {viewer.status}, error {viewer.error!r}", flush=True)
        print(log_tail)
    print(f"[{name}] analysing the capture", flush=True)
    return analyse(name, args, viewer, states, cpu, injected, metrics, channel, leftover)


def analyse(
    name: str,
    args: argparse.Namespace,
    viewer: Viewer,
    states: StatePoller,
    cpu: CpuSampler,
    injected: list[tuple[float, str, str]],
    metrics: str,
    channel: dict[str, object],
    leftover: int,
) -> Outcome:
    outcome = Outcome(name, [], [])
    row = outcome.row
    assert viewer.path is not None  # the bench's viewer writes to a file
    capture = viewer.path
    data = capture.read_bytes()
    arrivals = viewer.arrivals
    wall = viewer.seconds()
    zero = arrivals[0][0] if arrivals else 0.0
    row("recorded", f"{wall:.1f} s, {len(data) / 1e6:.1f} MB")
    kinds = Counter(kind for _, kind, _ in injected)
    by_kind = ", ".join(f"{kind} {kinds[kind]}" for kind in KINDS if kinds[kind])
    row("faults injected", f"{len(injected)} ({by_kind or '-'})")

    gap = worst_gap(arrivals)
    times = [at for at, size in arrivals if size > 0]
    gaps = sorted(((b - a, a - zero) for a, b in itertools.pairwise(times)), reverse=True)[:3]
    where = f" (at +{gaps[0][1]:.1f} s; next {', '.join(f'{g:.2f}' for g, _ in gaps[1:])})"
    row("worst delivery gap", f"{gap:.2f} s{where if gaps else ''}", gap)

    report = check_capture(data, fps=args.fps)
    for label, items in (
        ("video timestamp jumps", report.video_jumps),
        ("audio timestamp jumps", report.audio_jumps),
        ("CC breaks", report.cc_errors),
        ("PCR problems", report.pcr_problems),
    ):
        row(label, str(len(items)), len(items))
        outcome.examples(label, items)

    cut = capture.with_name("capture-cut.ts")
    cut.write_bytes(cut_clean(data))
    errors = decode_errors(cut, timeout=max(120.0, wall))
    row("decode errors (lines)", str(len(errors)), len(errors))
    outcome.examples("decode", errors, 3)

    frames = frame_arrivals(data, arrivals)
    try:
        offsets = marked_offsets(cut)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        row("A/V offsets (ms)", f"not measured ({str(exc)[:80]})")
    else:
        if offsets:
            ms = sorted(offset * 1000 for _, offset in offsets)
            outside = sum(abs(offset) > 40 for offset in ms)
            text = f"{len(ms)} marks: min {ms[0]:+.0f}, median {statistics.median(ms):+.0f},"
            text += f" max {ms[-1]:+.0f}; {outside} beyond +-40"
            row("A/V offsets (ms)", text, max(abs(ms[0]), abs(ms[-1])))
            by_item = offsets_by_item(offsets, frames, states.items, args.fps)
            parts = [
                f"{item} {min(v) * 1000:+.0f}..{max(v) * 1000:+.0f} ({len(v)})"
                for item, v in sorted(by_item.items())
            ]
            row("A/V offsets by item (ms)", ", ".join(parts))
        else:
            row("A/V offsets (ms)", "no marks found")

    media = report.video_frames / args.fps
    text = f"{media:.2f} s vs {wall:.2f} s: {media - wall:+.2f} s (includes the join burst)"
    row("media vs wall, end to end", text)
    rate = fitted_rate(frames, args.fps, WARMUP)
    if rate is None:
        row("drift (fit)", "n/a (too short)")
    else:
        ppm = (rate - 1) * 1e6
        row(f"drift (fit after {WARMUP:g} s)", f"{ppm:+.0f} ppm = {ppm * 3.6e-3:+.2f} s/hour")

    changes = [f"{state} (+{at - zero:.1f} s)" for at, state in states.changes]
    text = " -> ".join(changes[:8]) + (f" ... {len(changes) - 8} more" if len(changes) > 8 else "")
    row("channel states seen", text or "none")
    row("state polls", ", ".join(f"{s} {n}" for s, n in states.samples.most_common()))
    if states.workahead:
        ahead = states.workahead
        text = f"min {min(ahead):.2f}, median {statistics.median(ahead):.2f}"
        row("work-ahead (s)", text)
    else:
        row("work-ahead (s)", "n/a")

    filler = metric_by(metrics, "exstream_channel_filler_seconds_total", "reason")
    row("filler by reason", _counts(filler, " s"))
    skipped = metric_by(metrics, "exstream_items_skipped_total", "reason")
    row("items skipped", _counts(skipped))
    restarts = metric_by(metrics, "exstream_channel_restarts_total", "outcome")
    row("restarts", f"API {channel.get('restarts')}; by outcome: {_counts(restarts)}")
    unhealthy = metric_by(metrics, "exstream_channel_unhealthy_total", "reason")
    row("process ends needing a restart", _counts(unhealthy))
    row("channel failure at the end", str(channel.get("failure")))
    if leftover:
        row("stopped groups left after shutdown", str(leftover))

    window = max(cpu.last_at - cpu.first_at, 1e-9)
    by_name = cpu.by_name()
    ffmpeg, processes = by_name.pop("ffmpeg", (0.0, 0))
    server = cpu.server_last - cpu.server_first
    kernel = cpu.kernel_last - cpu.kernel_first
    percent = 100 / window
    text = f"{ffmpeg * percent:.1f}% ({processes} processes seen)"
    row("CPU ffmpeg, sampled, % of a core", text, ffmpeg * percent)
    row("CPU server, % of a core", f"{server * percent:.1f}%", server * percent)
    others = ", ".join(f"{n} {s * percent:.1f}% ({c})" for n, (s, c) in by_name.items())
    row("CPU other children, sampled", others or "-")
    text = f"{kernel * percent:.1f}% over {window:.0f} s"
    row("CPU all children (kernel), % of a core", text, kernel * percent)
    machine = (cpu.machine_last - cpu.machine_first) * percent
    row("CPU whole machine", f"{machine:.0f}% of {100 * (os.cpu_count() or 1)}%")
    return outcome


# -- output --------------------------------------------------------------------------------


def print_one(outcome: Outcome) -> None:
    width = max(len(label) for label, _, _ in outcome.rows)
    print(f"\n== {outcome.name}")
    for label, text, _ in outcome.rows:
        print(f"{label:<{width}}  {text}")
    if outcome.problems:
        print("examples:")
        for line in outcome.problems:
            print(f"  {line[:150]}")


def print_side_by_side(new: Outcome, old: Outcome) -> None:
    olds = {label: (text, number) for label, text, number in old.rows}
    print(f"\n| | {new.name} | {old.name} | ratio new/baseline |")
    print("|---|---|---|---|")
    seen = set()
    for label, text, number in new.rows:
        old_text, old_number = olds.get(label, ("-", None))
        ratio = "-"
        if number is not None and old_number is not None and old_number:
            ratio = f"{number / old_number:.2f}"
        print(f"| {label} | {text} | {old_text} | {ratio} |")
        seen.add(label)
    for label, text, _ in old.rows:
        if label not in seen:
            print(f"| {label} | - | {text} | - |")
    for outcome in (new, old):
        if outcome.problems:
            print(f"examples ({outcome.name}):")
            for line in outcome.problems:
                print(f"  {line[:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        __doc__, "Runs on demand only (never in make test); everything on loopback."
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="recording length")
    parser.add_argument("--item-seconds", type=float, default=20.0, help="length of each file")
    parser.add_argument("--seed", type=int, default=1, help="of the fault plan")
    parser.add_argument("--size", default="640x360", help="[ffmpeg] width x height")
    parser.add_argument("--fps", type=int, default=25, help="[ffmpeg] fps")
    parser.add_argument("--preset", default="veryfast", help="[ffmpeg] preset (x264)")
    parser.add_argument("--video-kbps", type=int, default=1500, help="[ffmpeg] video_bitrate")
    parser.add_argument("--segment-max", type=float, default=30.0, help="[playout] segment_max")
    parser.add_argument("--fault-min", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--fault-max", type=float, default=60.0, help="seconds between faults")
    parser.add_argument("--settle", type=float, default=10.0, help="no fault in the last s")
    parser.add_argument(
        "--faults", default=",".join(KINDS), help=f"kinds to draw from ({', '.join(KINDS)})"
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="also run REV (e.g. main) in a git worktree"
    )
    parser.add_argument("--keep", type=Path, help="keep captures and server logs here")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--faults: choose from {', '.join(KINDS)}")
    if not 0 < args.fault_min <= args.fault_max:
        parser.error("need 0 < --fault-min <= --fault-max")
    began = time.monotonic()
    plan = fault_plan(
        args.seed, args.minutes * 60, args.fault_min, args.fault_max, args.settle, kinds
    )
    print(
        f"fault plan (seed {args.seed}): "
        + (", ".join(f"+{f.at:.1f} s {f.kind}" for f in plan) or "none"),
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            root = args.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        made = time.monotonic()
        library = make_library(root / "library", args.item_seconds)
        print(
            f"library: {len(library)} files of {args.item_seconds:g} s made in"
            f" {time.monotonic() - made:.0f} s",
            flush=True,
        )
        new = run("this tree", ROOT, library, plan, args, root / "new")
        old = None
        if args.baseline:
            tree = stack.enter_context(worktree(args.baseline, root))
            label = f"baseline {args.baseline}"
            old = run(label, tree, library, plan, args, root / "baseline")
    print(
        f"\n{args.minutes:g} min per run, items of {args.item_seconds:g} s, {args.size} at"
        f" {args.fps} fps, preset {args.preset}, {args.video_kbps} kbit/s, segment_max"
        f" {args.segment_max:g} s; machine load average {os.getloadavg()[0]:.2f}"
        f" on {os.cpu_count()} cores; bench took {time.monotonic() - began:.0f} s"
    )
    if old is None:
        print_one(new)
    else:
        print_side_by_side(new, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
