"""`/api/channels`: what each channel is doing, and the operator's restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.channels import Channel
from service.errors import ExstreamError
from service.exposure import file_name, shows_paths, without_directories
from service.runner import ChannelRunner, ChannelState
from service.types import app_state


class ChannelNotRunning(ExstreamError):
    code = "channel_not_running"
    status_code = 409

    def __init__(self, channel: int) -> None:
        self.channel = channel
        super().__init__(channel)

    def __str__(self) -> str:
        return (
            f"channel {self.channel} has no process to restart (stopped, starting or"
            " restarting); open its stream to start it, or try again"
        )


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def process_status(runner: ChannelRunner, path: Callable[[str], str]) -> dict[str, Any] | None:
    """The ffmpeg of the moment: what it plays and for how long; None between two
    processes (viewers are served from the work-ahead meanwhile)."""
    pid, plan, spawned_at = runner.pid, runner.item, runner.spawned_at
    if pid is None or spawned_at is None:
        return None
    return {
        "pid": pid,
        "uptime_seconds": round(runner.clock() - spawned_at, 3),
        "plays": "slate" if plan is None else "item",
        "path": None if plan is None else path(plan.item.path),
        "seek_seconds": None if plan is None else round(plan.seek, 3),
    }


def channel_status(channel: Channel, base_url: str, now: float, *, paths: bool) -> dict[str, Any]:
    """The channel's status; with `paths` false, media paths are file names only."""
    runner = channel.runner
    current = channel.playout.entry_at(now)
    uptime = None
    if runner.running and runner.started_at is not None:
        uptime = round(time.monotonic() - runner.started_at, 3)
    known = [
        *channel.config.media,
        *(s.path for s in channel.skipped),
        *(s.path for s in runner.skips.values()),
        *([] if current is None else [current.item.path]),
    ]

    def path(value: str) -> str:
        return value if paths else file_name(value)

    def text(value: str | None) -> str | None:
        return value if paths or value is None else without_directories(value, known)

    return {
        "number": channel.number,
        "name": channel.config.name,
        "mode": channel.config.mode,
        "state": runner.state.value,
        "viewers": channel.viewers,
        "pid": runner.pid,
        "uptime_seconds": uptime,
        "process": process_status(runner, path),
        "restarts": runner.restarts,
        "failure": text(runner.failure),
        "last_output_at": rfc3339(runner.last_output_wall),
        "current": None
        if current is None
        else {
            "title": current.item.title,
            "path": path(current.item.path),
            "start": rfc3339(current.start),
            "end": rfc3339(current.end),
            "offset_seconds": round(current.inpoint + now - current.start, 3),
        },
        "media_items": len(channel.playout.items),
        "skipped_media": [{"path": path(s.path), "reason": s.reason} for s in channel.skipped],
        "skipped_items": [
            {"path": path(s.path), "reason": s.reason, "detail": text(s.detail)}
            for s in runner.skips.values()
        ],
        "workahead_seconds": round(runner.workahead, 3),
        "horizon_seconds": round(channel.playout.horizon(now), 3),
        "stream_url": f"{base_url}/stream/{channel.number}.ts",
    }


def base_url(request: Request) -> str:
    public = app_state(request).settings.server.public_url
    return (public or str(request.base_url)).rstrip("/")


async def list_channels(request: Request) -> JSONResponse:
    state = app_state(request)
    now = state.channels.wall()
    url = base_url(request)
    paths = shows_paths(state.settings.server, request.headers.get("authorization"))
    channels = state.channels.channels.values()
    return JSONResponse({"channels": [channel_status(c, url, now, paths=paths) for c in channels]})


async def get_channel(request: Request) -> JSONResponse:
    state = app_state(request)
    channel = state.channels.get(request.path_params["number"])
    paths = shows_paths(state.settings.server, request.headers.get("authorization"))
    return JSONResponse(
        channel_status(channel, base_url(request), state.channels.wall(), paths=paths)
    )


async def restart_channel(request: Request) -> JSONResponse:
    """Reset a failed channel, or restart a running one now (outside the restart budget)."""
    state = app_state(request)
    channel = state.channels.get(request.path_params["number"])
    runner = channel.runner
    if runner.state == ChannelState.FAILED:
        runner.reset()
        action = "reset"
    elif runner.running and runner.restart_now():
        action = "restarted"
    else:
        raise ChannelNotRunning(channel.number)
    return JSONResponse({"number": channel.number, "action": action}, status_code=202)
