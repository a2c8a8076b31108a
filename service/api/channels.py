"""`/api/channels`: what each channel is doing, and the operator's restart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.api.cluster import membership_of
from service.channels import Channel, ChannelView
from service.exposure import file_name, shows_paths, without_directories
from service.types import app_state


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def process_status(view: ChannelView, path: Callable[[str], str]) -> dict[str, Any] | None:
    """The ffmpeg of the moment: what it plays and for how long; None between two
    processes (viewers are served from the work-ahead meanwhile)."""
    process = view.process
    if process is None:
        return None
    plan = process.plan
    return {
        "pid": process.pid,
        "uptime_seconds": round(process.uptime, 3),
        "plays": "slate" if plan is None else "item",
        "path": None if plan is None else path(plan.item.path),
        "seek_seconds": None if plan is None else round(plan.seek, 3),
    }


def channel_status(channel: Channel, base_url: str, now: float, *, paths: bool) -> dict[str, Any]:
    """The channel's status; with `paths` false, media paths are file names only."""
    view = channel.view(now)
    current = view.current
    known = view.known_paths()

    def path(value: str) -> str:
        return value if paths else file_name(value)

    def text(value: str | None) -> str | None:
        return value if paths or value is None else without_directories(value, known)

    return {
        "number": view.number,
        "name": view.config.name,
        "mode": view.config.mode,
        "state": view.state.value,
        "viewers": view.viewers,
        "pid": None if view.process is None else view.process.pid,
        "uptime_seconds": None if view.uptime is None else round(view.uptime, 3),
        "process": process_status(view, path),
        "restarts": view.restarts,
        "failure": text(view.failure),
        "last_crash": None
        if view.last_crash is None
        else {
            "reason": view.last_crash.reason,
            "detail": text(view.last_crash.detail),
            "at": rfc3339(view.last_crash.at),
        },
        "last_output_at": rfc3339(view.last_output_wall),
        "current": None
        if current is None
        else {
            "title": current.item.title,
            "path": path(current.item.path),
            "start": rfc3339(current.start),
            "end": rfc3339(current.end),
            "offset_seconds": round(current.inpoint + now - current.start, 3),
        },
        "media_items": view.media_items,
        "skipped_media": [{"path": path(s.path), "reason": s.reason} for s in view.skipped_media],
        "skipped_items": [
            {"path": path(s.path), "reason": s.reason, "detail": text(s.detail)}
            for s in view.skipped_items
        ],
        "workahead_seconds": round(view.workahead, 3),
        "horizon_seconds": round(view.horizon, 3),
        "stream_url": f"{base_url}/stream/{view.number}.ts",
    }


def base_url(request: Request) -> str:
    public = app_state(request).settings.server.public_url
    return (public or str(request.base_url)).rstrip("/")


async def list_channels(request: Request) -> JSONResponse:
    state = app_state(request)
    now = state.channels.wall()
    url = base_url(request)
    paths = shows_paths(state.settings.server, request.headers.get("authorization"))
    owner = membership_of(request).owner
    channels = state.channels.channels.values()
    return JSONResponse(
        {
            "channels": [
                {**channel_status(c, url, now, paths=paths), "instance": owner(c.number).name}
                for c in channels
            ]
        }
    )


async def get_channel(request: Request) -> JSONResponse:
    state = app_state(request)
    channel = state.channels.get(request.path_params["number"])
    paths = shows_paths(state.settings.server, request.headers.get("authorization"))
    status = channel_status(channel, base_url(request), state.channels.wall(), paths=paths)
    status["instance"] = membership_of(request).owner(channel.number).name
    return JSONResponse(status)


async def restart_channel(request: Request) -> JSONResponse:
    """Reset a failed channel, or restart a running one now (outside the restart budget)."""
    channel = app_state(request).channels.get(request.path_params["number"])
    action = channel.restart()
    return JSONResponse({"number": channel.number, "action": action}, status_code=202)
