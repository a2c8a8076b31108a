from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.orphans import OWNER, OWNER_PROCESS, identity, marker, reap_orphans
from telemetry.metrics import Metrics


@pytest.fixture
def launched() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed at the end whatever happened."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def sleeper(launched: list[subprocess.Popen[bytes]], env: dict[str, str]) -> int:
    process = subprocess.Popen(["sleep", "600"], env={"PATH": os.defpath, **env})
    launched.append(process)
    return process.pid


def test_identity_is_the_pid_and_start_time() -> None:
    me = identity(os.getpid())
    assert me is not None
    pid, start = me.split(":")
    assert int(pid) == os.getpid() and int(start) > 0
    assert identity(os.getpid()) == me  # stable
    assert marker(Path("/srv/data")) == {OWNER: "/srv/data", OWNER_PROCESS: me}


def test_a_zombie_has_no_identity() -> None:
    process = subprocess.Popen(["true"])
    try:
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped
        assert identity(process.pid) is None
    finally:
        process.wait(10)


async def test_a_start_kills_only_processes_whose_owner_is_gone(
    tmp_path: Path, launched: list[subprocess.Popen[bytes]]
) -> None:
    data = tmp_path / "data"
    me = identity(os.getpid())
    assert me is not None
    gone = f"{2**22 + 1}:1"  # above the kernel's largest pid: no such process
    reused = f"{os.getpid()}:1"  # our pid, but not our start time: an earlier owner
    orphans = [
        sleeper(launched, {OWNER: str(data), OWNER_PROCESS: gone}),
        sleeper(launched, {OWNER: str(data), OWNER_PROCESS: reused}),
    ]
    kept = [
        sleeper(launched, {OWNER: str(data), OWNER_PROCESS: me}),  # a live owner's
        sleeper(launched, {OWNER: str(tmp_path / "other"), OWNER_PROCESS: gone}),
        sleeper(launched, {OWNER: str(data)}),  # an owner that cannot be checked
        sleeper(launched, {}),
    ]
    metrics = Metrics(CollectorRegistry())
    assert await reap_orphans(data, metrics) == 2
    assert metrics.registry.get_sample_value("exstream_orphans_reaped_total") == 2
    codes = {p.pid: p.wait(10) for p in launched if p.pid in orphans}
    assert codes == dict.fromkeys(orphans, -signal.SIGKILL)
    assert all(p.poll() is None for p in launched if p.pid in kept)
    assert await reap_orphans(data, metrics) == 0  # nothing left to do
