"""The JSON the pages update themselves from, besides `/api/channels` and the logs API:
the charts' last hour (`/api/history`) and a channel's coming programmes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.types import app_state
from service.web.history import INTERVAL, WINDOW
from service.web.pages import SCHEDULE_HOURS, SCHEDULE_LIMIT, history_of
from service.web.rendering import rfc3339


async def history(request: Request) -> JSONResponse:
    state = app_state(request)
    ring = history_of(request)
    now = state.channels.wall()
    channels: list[dict[str, Any]] = []
    for channel in state.channels.channels.values():
        series = ring.series(channel.number)
        total = channel.view(now).restarts
        channels.append(
            {
                "number": channel.number,
                "output_bits_per_second": series.output_bits_per_second,
                "viewers": series.viewers,
                "restarts": series.restarts,
                "restarts_total": total,
                "restarts_last_hour": ring.restarts_since(channel.number, now - WINDOW, total),
            }
        )
    return JSONResponse(
        {
            "interval_seconds": INTERVAL,
            "points": ring.points,
            "times": [rfc3339(t) for t in ring.times()],
            "channels": channels,
        }
    )


async def schedule(request: Request) -> JSONResponse:
    state = app_state(request)
    channel = state.channels.get(request.path_params["number"])
    now = state.channels.wall()
    entries = channel.guide(now, now + SCHEDULE_HOURS * 3600)[:SCHEDULE_LIMIT]
    return JSONResponse(
        {
            "number": channel.number,
            "entries": [
                {"title": e.item.title, "start": rfc3339(e.start), "end": rfc3339(e.end)}
                for e in entries
            ],
        }
    )
