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
    from service.refusals import TailSlots
    from service.storage import StoreHealth
    from telemetry.metrics import Metrics


@dataclass(eq=False)
class AppState:
    settings: Settings
    metrics: Metrics
    channels: ChannelRegistry
    pool: ProcessPool
    monitor: HealthMonitor
    logs: LogStore
    tails: TailSlots
    tool_problems: tuple[str, ...]  # what is wrong with the configured ffmpeg or ffprobe
    started_at: float
    storage: tuple[StoreHealth, ...] = ()  # the stores on the data disk, for /readyz


def app_state(request: Request) -> AppState:
    return cast(AppState, request.state.exstream)
