"""Processes left behind by an earlier run on the same data directory, ended at start.

Every child carries a marker in its environment: the data directory of the exstream
that started it, and that exstream's identity (pid and start time, which no later
process shares). A run that died without taking its children along (the parent-death
signal is set a moment after the spawn, and an older exstream had none) leaves
processes that name our data directory and an owner that is gone. A start kills those,
and only those: a live owner (another exstream on the same data directory) keeps its
children, and processes of other users are never looked at. Nothing is written to
disk: streaming must never depend on a writable one.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from loguru import logger

from telemetry.metrics import Metrics

OWNER = "EXSTREAM_OWNER"
OWNER_PROCESS = "EXSTREAM_OWNER_PROCESS"
PROC = Path("/proc")
_START_TIME = 19  # starttime, the 22nd field of /proc/<pid>/stat, counted after "(comm)"


def identity(pid: int, proc: Path = PROC) -> str | None:
    """`pid:start time` of a live process (None if there is none): pids are reused,
    this pair is not."""
    try:
        stat = (proc / str(pid) / "stat").read_bytes().decode("latin-1")
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces and parentheses itself.
    fields = stat.rpartition(")")[2].split()
    if len(fields) <= _START_TIME or fields[0] in ("Z", "X"):  # a zombie has ended
        return None
    return f"{pid}:{fields[_START_TIME]}"


def marker(data_dir: Path) -> dict[str, str]:
    """The environment variables that name this process as the owner of a child."""
    owner = {OWNER: str(data_dir)}
    me = identity(os.getpid())
    if me is not None:
        owner[OWNER_PROCESS] = me
    return owner


def _environment(pid: int, proc: Path) -> dict[str, str]:
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return {}
    pairs = (entry.partition(b"=") for entry in raw.split(b"\0") if entry)
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, _, v in pairs}


def _is_orphan(pid: int, data_dir: Path, proc: Path) -> bool:
    env = _environment(pid, proc)
    if env.get(OWNER) != str(data_dir):
        return False
    owner = env.get(OWNER_PROCESS)
    if owner is None or not owner.partition(":")[0].isdigit():
        return False  # an owner we cannot check is not ours to judge
    return identity(int(owner.partition(":")[0]), proc) != owner


def find_orphans(data_dir: Path, proc: Path = PROC) -> list[int]:
    """Pids of this user's processes that name `data_dir` and an owner that is gone."""
    me, uid = os.getpid(), os.getuid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        if _is_orphan(int(entry.name), data_dir, proc):
            found.append(int(entry.name))
    return found


def reap(data_dir: Path, proc: Path = PROC) -> int:
    """SIGKILL the orphans of `data_dir`; how many were killed.

    Each is pinned with a pidfd and checked again before the signal, so a pid reused
    in the meantime is never signalled.
    """
    killed = 0
    for pid in find_orphans(data_dir, proc):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue  # ended by itself
        try:
            if _is_orphan(pid, data_dir, proc):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed += 1
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return killed


async def reap_orphans(data_dir: Path, metrics: Metrics) -> int:
    """`reap` off the event loop, logged (one WARNING) and counted."""
    killed = await asyncio.to_thread(reap, data_dir)
    if killed:
        metrics.orphans_reaped.inc(killed)
        logger.warning(
            "killed {} process(es) left behind by an earlier run on {}",
            killed, data_dir, reason="orphans",
        )  # fmt: skip
    return killed
