"""Child processes against a real server: they die with it, a start reaps what an earlier
run left behind, a machine short of file descriptors does not fail a channel, and
ffmpeg gets none of the service's secrets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from service.children import KEPT, KEPT_PREFIXES
from service.orphans import OWNER, OWNER_PROCESS, marker
from tests.harness.config import FAST_HEALTH, one_channel, write_config
from tests.harness.processes import alive, run_python
from tests.harness.server import Server, run_server
from tests.harness.standin import StandInFactory
from tests.polling import wait_for

OPEN_FILES = 256


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running_process(server: Server, log: Path) -> int:
    """The channel's process, once the program itself runs (it logged its spawn)."""

    def started() -> int | None:
        pid: int | None = server.channel(1)["pid"]
        logged = log.read_text().split() if log.exists() else []
        return pid if pid is not None and str(pid) in logged else None

    found: int = wait_for(started, 30, "the channel's process to run")
    return found


def test_a_stopped_process_dies_with_a_killed_server(stand_in: StandInFactory) -> None:
    config, env, log = stand_in(health=FAST_HEALTH)
    children: list[int] = []
    try:
        with run_server(config, env) as server:
            pid = running_process(server, log)
            children = [p.pid for p in server.children()]
            assert pid in children
            os.kill(pid, signal.SIGSTOP)  # hung: it would never notice its pipes close
            server.process.kill()
            server.process.wait(10)
            wait_for(
                lambda: not any(alive(p) for p in children), 10, "the server's children to die"
            )
    finally:
        kill(children)


# An exstream that started a child and died without taking it along.
LEFT_BEHIND = """
import subprocess, sys
from pathlib import Path
from service.children import child_environment
from service.orphans import marker

env = child_environment({"PATH": "/usr/bin:/bin"}, marker=marker(Path(sys.argv[1])))
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
print(subprocess.Popen(["sleep", "600"], env=env, start_new_session=True, **quiet).pid)
"""


def left_behind(data_dir: Path) -> int:
    result = run_python(LEFT_BEHIND, str(data_dir), timeout=30)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.fixture
def strays() -> Iterator[list[int]]:
    """Pids a test leaves without a parent of its own; killed at the end."""
    pids: list[int] = []
    yield pids
    kill(pids)


def test_a_start_reaps_what_an_earlier_run_left_behind_and_nothing_else(
    tmp_path: Path, strays: list[int]
) -> None:
    config = write_config(tmp_path, [])
    data_dir = tmp_path / "data"
    orphan = left_behind(data_dir)
    elsewhere = left_behind(tmp_path / "other-data")  # another installation's
    # A live owner's child (this test's, as if a second exstream shared the directory).
    env = {"PATH": os.defpath, **marker(data_dir)}
    owned = subprocess.Popen(["sleep", "600"], env=env)
    strays += [orphan, elsewhere, owned.pid]
    try:
        assert alive(orphan) and alive(elsewhere)
        with run_server(config) as server:
            wait_for(lambda: not alive(orphan), 10, "the left-behind process to be killed")
            assert server.metric("exstream_orphans_reaped_total") == 1
            assert "killed 1 process(es) left behind by an earlier run" in server.log()
            assert alive(elsewhere) and owned.poll() is None
    finally:
        owned.kill()
        owned.wait(10)


def test_a_machine_out_of_file_descriptors_does_not_fail_the_channel(
    stand_in: StandInFactory,
) -> None:
    # Connections may take every descriptor: no cap, and idle ones are not closed.
    server_options = {"max_connections": 100_000, "header_timeout": 600.0}
    config, env, log = stand_in(health=FAST_HEALTH, server=server_options)
    with run_server(config, env, open_files=OPEN_FILES) as server:
        pid = running_process(server, log)
        descriptors = Path(f"/proc/{server.pid}/fd")
        idle: list[socket.socket] = []
        try:
            # More than it can take (it closes what it cannot accept).
            for _ in range(OPEN_FILES + 16):
                idle.append(socket.create_connection(("127.0.0.1", server.port)))
            wait_for(
                lambda: len(list(descriptors.iterdir())) >= OPEN_FILES - 2,
                10,
                "the server to run out of descriptors",
            )
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda: "cannot start a process" in server.log(), 30, "a spawn short of descriptors"
            )
        finally:
            for connection in idle:
                connection.close()

        def streaming_again() -> bool:
            channel: dict[str, Any] = server.channel(1)
            return channel["pid"] not in (None, pid) and channel["state"] == "running"

        wait_for(streaming_again, 30, "the channel to stream again", ignore=(OSError,))
        channel = server.channel(1)
        assert channel["restarts"] == 1  # the kill; not the spawns short of descriptors
        assert channel["failure"] is None
        assert server.metric("exstream_pool_acquire_failures_total", reason="resources") >= 1
        assert server.metric("exstream_pool_acquire_failures_total", reason="spawn_failed") == 0
        assert server.metric("exstream_channel_restarts_total", outcome="refused") == 0
        assert server.metric("exstream_restart_budget_exhausted_total") == 0
        assert "-> failed" not in server.log()
        assert server.log().count("cannot start a process") == 1  # one WARNING an episode
        with server.client() as client, client.stream("GET", "/stream/1.ts") as response:
            assert response.status_code == 200
            assert next(response.iter_raw())


def test_ffmpeg_gets_none_of_the_services_secrets(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    config = one_channel(tmp_path, clips(1, 30.0))
    secrets = {"EXSTREAM_API_TOKEN": "s3cret-token", "CLOUD_SECRET_KEY": "another secret"}
    with run_server(config, env=secrets) as server:

        def ffmpeg() -> int | None:
            pid: int | None = server.channel(1)["pid"]
            with contextlib.suppress(psutil.Error):
                if pid is not None and psutil.Process(pid).name() == "ffmpeg":
                    return pid
            return None

        pid = wait_for(ffmpeg, 30, "the channel's ffmpeg")
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        env = dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if entry)
    for name in env:
        assert name in KEPT or name.startswith(KEPT_PREFIXES) or name in (OWNER, OWNER_PROCESS)
    assert "EXSTREAM_API_TOKEN" not in env and "CLOUD_SECRET_KEY" not in env
    assert env[OWNER] == str(tmp_path / "data")
    assert env[OWNER_PROCESS].startswith(f"{server.pid}:")
    assert env["PATH"] == os.environ["PATH"]
