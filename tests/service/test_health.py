from __future__ import annotations

from dataclasses import replace

import pytest

from service.health import HealthSnapshot, Verdict, classify
from service.runner import ChannelState

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
    ],
)
def test_classify(changes: dict[str, object], verdict: Verdict) -> None:
    assert classify(replace(HEALTHY, **changes)) == verdict  # type: ignore[arg-type]


def test_only_a_running_process_can_be_a_fault() -> None:
    faults = {Verdict.EXITED, Verdict.STALLED}
    quiet = replace(HEALTHY, pid=None, since_output=None)
    for state in ChannelState:
        assert classify(replace(quiet, state=state)) not in faults
