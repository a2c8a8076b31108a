from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from loguru import logger
from prometheus_client import CollectorRegistry

from service.config import ChannelConfig, Settings
from service.health import HealthMonitor, HealthSnapshot, Verdict, classify, snapshot_of
from service.hub import Hub
from service.media import MediaItem
from service.playout import Gap, ItemPlan, Playout
from service.pool import ProcessPool
from service.process import ManagedProcess
from service.processrun import Ended, ProcessRun
from service.ratelimit import TokenBucket
from service.restart import RestartPolicy
from service.runner import ChannelRunner, ChannelState
from telemetry.metrics import Metrics
from tests.conftest import FakeClock

HEALTHY = HealthSnapshot(
    channel="1",
    state=ChannelState.RUNNING,
    supervised=True,
    pid=1234,
    exit_code=None,
    since_output=0.5,
    stall_timeout=15.0,
)


@pytest.mark.parametrize(
    ("changes", "verdict"),
    [
        ({}, Verdict.HEALTHY),
        ({"since_output": 15.5}, Verdict.STALLED),
        ({"since_output": 15.0}, Verdict.HEALTHY),
        ({"pid": None, "exit_code": 1}, Verdict.EXITED),
        ({"state": ChannelState.SLATE}, Verdict.NO_CONTENT),
        ({"state": ChannelState.SLATE, "since_output": 30.0}, Verdict.STALLED),
        ({"state": ChannelState.STOPPED, "supervised": False, "pid": None}, Verdict.IDLE),
        ({"state": ChannelState.FAILED, "pid": None}, Verdict.FAILED),
        ({"state": ChannelState.RESTARTING, "pid": None, "since_output": None}, Verdict.STARTING),
        ({"state": ChannelState.STARTING, "since_output": 3.0}, Verdict.STARTING),
        ({"state": ChannelState.STARTING, "since_output": 20.0}, Verdict.STALLED),
        # Owing frames while the work-ahead drains: stalled long before stall_timeout.
        ({"since_output": 1.5, "workahead": 2.0, "workahead_target": 5.0}, Verdict.STALLED),
        ({"since_output": 0.8, "workahead": 2.0, "workahead_target": 5.0}, Verdict.HEALTHY),
        ({"since_output": 1.5, "workahead": 3.0, "workahead_target": 5.0}, Verdict.HEALTHY),
        ({"since_output": None, "workahead": 0.0, "workahead_target": 5.0}, Verdict.HEALTHY),
    ],
)
def test_classify(changes: dict[str, object], verdict: Verdict) -> None:
    assert classify(replace(HEALTHY, **changes)) == verdict  # type: ignore[arg-type]


def test_only_a_running_process_can_be_a_fault() -> None:
    faults = {Verdict.EXITED, Verdict.STALLED}
    quiet = replace(HEALTHY, pid=None, since_output=None)
    for state in ChannelState:
        assert classify(replace(quiet, state=state)) not in faults


def make_runner(clock: FakeClock) -> ChannelRunner:
    metrics = Metrics(CollectorRegistry())
    return ChannelRunner(
        ChannelConfig(number=4, name="Four"),
        Settings(path=Path("channels.toml")),
        hub=Hub(1024 * 188),
        playout=Playout(0.0, 60.0),
        pool=ProcessPool(1, TokenBucket(1.0, 1, clock=clock), metrics),
        policy=RestartPolicy(3, 60.0, clock=clock),
        metrics=metrics,
        clock=clock,
    )


async def test_snapshot_counts_only_the_time_a_process_owes_frames(clock: FakeClock) -> None:
    runner = make_runner(clock)
    assert snapshot_of(runner, clock(), 15.0).since_output is None  # no process
    run = ProcessRun("4", Gap(None), pool=runner.pool, timeline=runner.timeline, clock=clock)
    runner.run = run
    async with ManagedProcess(["sleep", "100"]) as proc:
        run.process = proc
        run.progress_at = clock()
        clock.advance(20.0)
        snapshot = snapshot_of(runner, clock(), 15.0)
        assert (snapshot.channel, snapshot.pid, snapshot.exit_code) == ("4", proc.pid, None)
        assert snapshot.since_output == 20.0
        assert snapshot.stall_timeout == 15.0
        # The work-ahead is full: a healthy process waits too, and is not stalled.
        run.waiting_for_room = True
        assert snapshot_of(runner, clock(), 15.0).since_output is None
        run.waiting_for_room = False
        run.progress_at = clock() - 2.0  # it gave frames since
        assert snapshot_of(runner, clock(), 15.0).since_output == 2.0
    ended = snapshot_of(runner, clock(), 15.0)
    assert proc.returncode is not None
    assert (ended.pid, ended.exit_code) == (None, proc.returncode)


def item_plan(seek: float, frames: int = 150) -> ItemPlan:
    item = MediaItem("/media/c.ts", 6.0, "c", "h264", "aac", 320, 240, 0, 1)
    return ItemPlan(item, seek, frames, schedule_start=0.0, entry_end=6.0)


@pytest.mark.parametrize(
    ("code", "produced", "seek", "reason"),
    [
        (0, 40, 0.0, "ended_early"),  # truncated: some frames, then a clean end
        (0, 0, 4.0, "ended_early"),  # truncated before the seek point
        (0, 0, 0.0, "no_output"),  # nothing at all from the start
        (1, 0, 4.0, "failed"),  # an error exit is never an early end
    ],
)
def test_an_item_that_cannot_play_to_its_end_is_skipped_with_its_reason(
    clock: FakeClock, code: int, produced: int, seek: float, reason: str
) -> None:
    runner = make_runner(clock)
    ended = Ended(code, produced, "", stalled=None, replaced=False)
    assert runner._verdict(ended, item_plan(seek)) is None  # no restart
    assert [skip.reason for skip in runner.skips.values()] == [reason]


def test_a_whole_item_is_not_skipped(clock: FakeClock) -> None:
    runner = make_runner(clock)
    ended = Ended(0, 150, "", stalled=None, replaced=False)
    assert runner._verdict(ended, item_plan(0.0)) is None
    assert runner.skips == {}


def test_debug_lines_say_each_change_of_verdict_once(clock: FakeClock) -> None:
    runner = make_runner(clock)
    monitor = HealthMonitor(
        lambda: [runner], check_interval=1.0, stall_timeout=15.0, metrics=runner.metrics,
        clock=clock,
    )  # fmt: skip
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    try:
        monitor.check()
        monitor.check()  # the same verdict: nothing new
        runner.state = ChannelState.FAILED
        monitor.check()
    finally:
        logger.remove(handler)
    verdicts = [line.split(" (", 1)[0] for line in lines if line.startswith("channel 4 health")]
    assert verdicts == ["channel 4 health: idle", "channel 4 health: failed"]
