from __future__ import annotations

import asyncio
import errno
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.config import ChannelConfig, Settings
from service.hub import Hub
from service.playout import Playout
from service.pool import ProcessPool
from service.process import ManagedProcess
from service.ratelimit import TokenBucket
from service.restart import RestartPolicy
from service.runner import ChannelRunner, ChannelState
from telemetry.metrics import Metrics
from tests.loglines import capturing, message
from tests.polling import wait_until


class Spawns:
    """A process factory whose starts fail with the errno codes given, one per spawn;
    None: a start that never ends (until the runner is stopped)."""

    def __init__(self, *codes: int | None) -> None:
        self.codes = deque(codes)
        self.count = 0

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str]) -> ManagedProcess:
        spawns = self

        class Scripted(ManagedProcess):
            async def start(self) -> None:
                spawns.count += 1
                code = spawns.codes.popleft() if spawns.codes else None
                if code is None:
                    await asyncio.Event().wait()
                    return
                raise OSError(code, os.strerror(code))

        return Scripted(argv, env=env)


@dataclass(frozen=True)
class Sleep:
    seconds: float
    failure: str | None  # what the channel's API said meanwhile
    charged: int  # restarts charged to the channel's budget by then


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    with capturing(message, "WARNING") as found:
        yield found


async def test_a_machine_short_of_resources_is_waited_out_outside_the_budget(
    warnings: list[str],
) -> None:
    spawns = Spawns(errno.EMFILE, errno.EMFILE, errno.EMFILE, errno.ENOENT, None)
    metrics = Metrics(CollectorRegistry())
    metrics.add_channel("1")
    sleeps: list[Sleep] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(Sleep(seconds, runner.failure, policy.recent("1")))
        await asyncio.sleep(0)

    policy = RestartPolicy(3, 60.0, sleep=sleep)
    runner = ChannelRunner(
        ChannelConfig(number=1, name="One"),
        Settings(path=Path("channels.toml")),
        hub=Hub(1024 * 188),
        playout=Playout(0.0, 60.0),  # nothing to play: a slate process, without a clip
        pool=ProcessPool(1, TokenBucket(1000, 1000), metrics, process_factory=spawns),
        policy=policy,
        metrics=metrics,
    )
    runner.start()
    try:
        await wait_until(lambda: spawns.count == 5, 10, "five spawns")
        # Three spawns short of file descriptors: backoff, nothing charged, and the API
        # says why; then a missing program, a genuine failure: charged, as before.
        short = [s for s in sleeps if s.failure is not None]
        assert len(short) == 3 and len(sleeps) == 4
        assert all("Too many open files" in (s.failure or "") for s in short)
        assert [s.charged for s in sleeps] == [0, 0, 0, 0]
        for attempt, wait in enumerate(short):
            assert 0.5 * 2**attempt <= wait.seconds <= 0.5 * 2**attempt + 1.0
        assert policy.recent("1") == 1 and runner.restarts == 1
        assert runner.state != ChannelState.FAILED
        value = metrics.registry.get_sample_value
        acquire = "exstream_pool_acquire_failures_total"
        assert value(acquire, {"reason": "resources"}) == 3
        assert value(acquire, {"reason": "spawn_failed"}) == 1
        unhealthy = "exstream_channel_unhealthy_total"
        assert value(unhealthy, {"channel": "1", "reason": "spawn_failed"}) == 1
        assert value("exstream_restart_budget_exhausted_total", {"channel": "1"}) == 0
        short_warnings = [m for m in warnings if "cannot start a process" in m]
        assert len(short_warnings) == 1  # one per episode, not one per spawn
    finally:
        await runner.stop()
