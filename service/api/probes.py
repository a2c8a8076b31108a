"""Probes: `/healthz` (the process answers) and `/readyz` (config loaded, ffmpeg found).

`/readyz` also reports the stores on the data disk (`storage`), but they never decide
readiness: streaming needs neither the log store nor the probe cache.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.types import app_state


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    state = app_state(request)
    checks = {"config": True, "ffmpeg": state.ffmpeg_found, "accepting": not state.channels.closing}
    ready = all(checks.values())
    storage = {health.store: health.as_json() for health in state.storage}
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "storage": storage},
        status_code=200 if ready else 503,
    )
