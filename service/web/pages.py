"""The pages for people: status (`/`), guide, one channel, and the logs."""

from __future__ import annotations

from typing import cast

from loguru import logger
from starlette.requests import Request
from starlette.responses import Response

from service.exposure import shows_paths
from service.logfile import LogStoreUnavailable
from service.logstore import LEVELS, LogFilter, LogStore
from service.types import app_state
from service.web import guidegrid
from service.web.history import History
from service.web.rendering import base_url, not_found, page
from service.web.views import Problem, channel_view, charts, logs_open, overview, programme

SCHEDULE_HOURS = 3.0
SCHEDULE_LIMIT = 50
# The newest warnings looked through for each channel's last problem: one bounded query.
PROBLEM_SCAN = 500
LOG_FILTERS = ("level", "channel", "since", "until", "q", "trace_id", "entry")


def history_of(request: Request) -> History:
    return cast(History, request.state.history)


async def last_problems(store: LogStore) -> dict[str, Problem]:
    """Each channel's newest WARNING or worse among the latest PROBLEM_SCAN of them."""
    try:
        entries = await store.page(LogFilter(min_level=LEVELS["WARNING"]), None, PROBLEM_SCAN)
    except LogStoreUnavailable as exc:
        logger.debug("status page without log lines: {}", exc)
        return {}
    problems: dict[str, Problem] = {}
    for entry in entries:  # newest first
        if entry.channel is not None and entry.channel not in problems:
            problems[entry.channel] = Problem.of(entry)
    return problems


async def status_page(request: Request) -> Response:
    state = app_state(request)
    history = history_of(request)
    server = state.settings.server
    now = state.channels.wall()
    paths = shows_paths(server, None)
    channels = list(state.channels.channels.values())
    views = [channel_view(c, now, history, paths=paths) for c in channels]
    problems = await last_problems(state.logs) if logs_open(server) else {}
    return page(
        request,
        "status.html",
        {
            "overview": overview(state, base_url(request)),
            "channels": views,
            "charts": {c.number: charts(history.series(c.number), history.points) for c in views},
            "problems": problems,
            "now": now,
        },
        nav="",
    )


async def guide_page(request: Request) -> Response:
    state = app_state(request)
    now = state.channels.wall()
    columns = guidegrid.window(now)
    end = columns[-1] + guidegrid.SLOT
    rows = [
        guidegrid.row(c.number, c.config.name, c.guide(now, end), columns)
        for c in state.channels.channels.values()
    ]
    grid = guidegrid.Grid(columns[0], now, end, columns, tuple(rows))
    return page(request, "guide.html", {"grid": grid}, nav="guide")


async def channel_page(request: Request) -> Response:
    state = app_state(request)
    number: int = request.path_params["number"]
    channel = state.channels.channels.get(number)
    if channel is None:
        return not_found(request, f"There is no channel {number}.")
    now = state.channels.wall()
    history = history_of(request)
    server = state.settings.server
    view = channel_view(channel, now, history, paths=shows_paths(server, None))
    entries = channel.guide(now, now + SCHEDULE_HOURS * 3600)[:SCHEDULE_LIMIT]
    problems = await last_problems(state.logs) if logs_open(server) else {}
    return page(
        request,
        "channel.html",
        {
            "channel": view,
            "charts": charts(history.series(number), history.points),
            "schedule": [programme(e) for e in entries],
            "problem": problems.get(str(number)),
            "stream_url": f"{base_url(request)}/{view.stream_path}",
            "now": now,
        },
    )


async def no_channel_page(request: Request) -> Response:
    """A channel path that is no channel number at all."""
    return not_found(request, f"There is no channel {request.path_params['number']!r}.")


async def logs_page(request: Request) -> Response:
    """The filters as given; the entries come from the logs API, with the token if needed."""
    params = request.query_params
    filters = {name: params.get(name, "") for name in LOG_FILTERS}
    return page(request, "logs.html", {"filters": filters, "levels": list(LEVELS)}, nav="logs")
