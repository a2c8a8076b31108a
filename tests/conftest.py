from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger

from service.demo import make_clip
from telemetry.logging import STDLIB_LOGGERS


class FakeClock:
    """A clock that only moves when told to, and a sleep that moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, float], list[Path]]:
    """Factory of short H.264/AAC clips made with lavfi, cached for the session."""
    root = tmp_path_factory.mktemp("clips")
    made: dict[tuple[int, float], list[Path]] = {}

    def make(count: int, duration: float) -> list[Path]:
        key = (count, duration)
        if key not in made:
            made[key] = [
                make_clip(
                    root / f"{count}x{duration:g}" / f"clip{i}.mp4",
                    duration,
                    frequency=300 + 100 * i,
                    size="320x240",
                )
                for i in range(count)
            ]
        return made[key]

    return make


@pytest.fixture
def chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Tests that call configure_logging get loguru's and logging's defaults back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None, extra={})
    logger.add(sys.stderr)
    root.handlers, root.level = saved
    for name in STDLIB_LOGGERS:
        std = logging.getLogger(name)
        std.handlers = []
        std.propagate = True
        std.setLevel(logging.NOTSET)
