"""Shared types: the object graph handlers read from the lifespan state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from starlette.requests import Request

if TYPE_CHECKING:
    from service.channels import ChannelRegistry
    from service.config import Settings
    from service.health import HealthMonitor
    from service.logstore import LogStore
    from service.pool import ProcessPool
    from telemetry.metrics import Metrics


@dataclass(eq=False)
class AppState:
    settings: Settings
    metrics: Metrics
    channels: ChannelRegistry
    pool: ProcessPool
    monitor: HealthMonitor
    logs: LogStore
    ffmpeg_found: bool
    started_at: float


def app_state(request: Request) -> AppState:
    return cast(AppState, request.state.exstream)
