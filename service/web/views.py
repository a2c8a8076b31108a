"""What the pages show of the service: plain values built from the live objects, so the
templates only lay them out.

A page is served to whoever asks (no token is ever sent with a page), so it shows what
`GET /api/channels` shows an anonymous caller: paths only where the service is bound
to loopback with no token (service/exposure.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from service import __version__
from service.channels import Channel
from service.channels import ChannelView as Reading
from service.config import ServerSettings
from service.exposure import is_loopback, without_directories
from service.logstore import LogEntry
from service.playout import Entry
from service.types import AppState
from service.web.history import WINDOW, History, Series

SPARK_WIDTH = 120
SPARK_HEIGHT = 24


@dataclass(frozen=True, slots=True)
class Programme:
    title: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def elapsed(self, now: float) -> float:
        return min(max(now - self.start, 0.0), self.duration)


@dataclass(frozen=True, slots=True)
class Problem:
    """The last WARNING or worse a channel logged, as the logs API shows it."""

    id: str
    time: str
    level: str
    message: str
    trace_id: str | None
    reason: str | None

    @classmethod
    def of(cls, entry: LogEntry) -> Problem:
        reason = entry.extra.get("reason")
        return cls(
            entry.id,
            entry.time,
            entry.level,
            entry.message,
            entry.trace_id,
            reason if isinstance(reason, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Sparkline:
    """An inline SVG chart: polylines (gaps split them) and a sentence that says it."""

    lines: tuple[str, ...]
    label: str


@dataclass(frozen=True, slots=True)
class Charts:
    output: Sparkline
    viewers: Sparkline
    restarts: Sparkline


@dataclass(frozen=True, slots=True)
class ChannelView:
    number: int
    name: str
    group: str | None
    logo: str | None  # an http(s) URL, or None
    mode: str
    state: str
    viewers: int
    restarts: int
    restarts_last_hour: int
    workahead: float
    uptime: float | None
    now: Programme | None
    next: Programme | None
    failure: str | None
    stream_path: str  # relative to the service's root


@dataclass(frozen=True, slots=True)
class Overview:
    version: str
    ready: bool
    problems: tuple[str, ...]  # why not ready, and the stores that do not work
    uptime: float
    base_url: str


def programme(entry: Entry) -> Programme:
    return Programme(entry.item.title, entry.start, entry.end)


def web_logo(logo: str | None) -> str | None:
    """Only a URL a browser can load; a file path would be a request to this service."""
    if logo and logo.lower().startswith(("http://", "https://")):
        return logo
    return None


def access(server: ServerSettings) -> str:
    """How the logs API and the restart action are reached from a page (service/auth.py):
    `open` (loopback, no token set), `token` (the API token is needed), or `off` (beyond
    loopback with no token: the logs API is refused, restarts are open)."""
    if server.api_token:
        return "token"
    return "open" if is_loopback(server.host) else "off"


def logs_open(server: ServerSettings) -> bool:
    return access(server) == "open"


def problem_text(view: Reading, paths: bool) -> str | None:
    """Why the channel failed, else its last crash (kept after it healed), with the
    directories cut out unless paths are shown."""
    if view.failure is not None:
        text = view.failure
    elif view.last_crash is not None:
        text = f"{view.last_crash.reason}: {view.last_crash.detail}"
    else:
        return None
    return text if paths else without_directories(text, view.known_paths())


def channel_view(
    channel: Channel, now: float, history: History | None, *, paths: bool
) -> ChannelView:
    view = channel.view(now)
    last_hour = view.restarts
    if history is not None:
        last_hour = history.restarts_since(channel.number, now - WINDOW, view.restarts)
    return ChannelView(
        number=view.number,
        name=view.config.name,
        group=view.config.group,
        logo=web_logo(view.config.logo),
        mode=view.config.mode,
        state=view.state.value,
        viewers=view.viewers,
        restarts=view.restarts,
        restarts_last_hour=last_hour,
        workahead=view.workahead,
        uptime=view.uptime,
        now=None if view.current is None else programme(view.current),
        next=None if view.following is None else programme(view.following),
        failure=problem_text(view, paths),
        stream_path=f"stream/{view.number}.ts",
    )


def overview(state: AppState, base_url: str) -> Overview:
    """The header: the same checks as `/readyz`, and the stores that are off."""
    ready = not state.tool_problems and not state.channels.closing
    problems = list(state.tool_problems)
    if state.channels.closing:
        problems.append("shutting down: not accepting viewers")
    for health in state.storage:
        if health.fault is not None:
            problems.append(f"{health.name}: {health.fault.reason} ({health.consequence})")
    return Overview(
        __version__, ready, tuple(problems), time.monotonic() - state.started_at, base_url
    )


# --- charts --------------------------------------------------------------------------------


def polylines(values: Sequence[float | None], points: int) -> tuple[str, ...]:
    """SVG polyline points for `values`, right-aligned on a scale of `points` samples (an
    hour), scaled to the largest value; a None splits the line."""
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    step = SPARK_WIDTH / max(points - 1, 1)
    offset = points - len(values)
    lines: list[str] = []
    run: list[str] = []
    for position, value in enumerate(values):
        if value is None:
            if len(run) > 1:
                lines.append(" ".join(run))
            run = []
            continue
        x = (offset + position) * step
        y = SPARK_HEIGHT - value / top * SPARK_HEIGHT
        run.append(f"{x:.1f},{y:.1f}")
    if len(run) > 1:
        lines.append(" ".join(run))
    return tuple(lines)


def bit_rate(bits_per_second: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.1f} {unit}"
    return f"{bits_per_second:.0f} bit/s"


def charts(series: Series, points: int) -> Charts:
    rates = series.output_bits_per_second
    known_rates = [r for r in rates if r is not None]
    latest = bit_rate(known_rates[-1]) if known_rates else "no data yet"
    peak = bit_rate(max(known_rates)) if known_rates else "none"
    viewers = series.viewers
    restarts = [r or 0 for r in series.restarts]
    return Charts(
        Sparkline(
            polylines(rates, points), f"Output rate over the last hour: {latest}, peak {peak}"
        ),
        Sparkline(
            polylines(list(map(float, viewers)), points),
            f"Viewers over the last hour: {viewers[-1] if viewers else 0},"
            f" at most {max(viewers, default=0)}",
        ),
        Sparkline(
            polylines(list(map(float, restarts)), points),
            f"Restarts over the last hour: {sum(restarts)}",
        ),
    )
