"""Probes: `/healthz` (the process answers) and `/readyz` (config loaded, ffmpeg and
ffprobe work: tried once at start, see service/tools.py; `problems` names the keys).

`/readyz` also reports the stores on the data disk (`storage`), but they never decide
readiness: streaming needs neither the log store nor the probe cache.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.types import app_state


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    state = app_state(request)
    checks = {
        "config": True,
        "ffmpeg": not state.tool_problems,
        "accepting": not state.channels.closing,
    }
    ready = all(checks.values())
    storage = {health.store: health.as_json() for health in state.storage}
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "storage": storage,
    }
    if state.tool_problems:
        body["problems"] = list(state.tool_problems)
    return JSONResponse(body, status_code=200 if ready else 503)
