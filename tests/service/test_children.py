from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from service.children import _SHIM, child_environment
from service.media import MediaScanner, ProbeCache
from service.process import ManagedProcess
from tests.harness.processes import ROOT, alive, run_python
from tests.polling import wait_for


def test_the_environment_keeps_what_ffmpeg_needs_and_nothing_else() -> None:
    needed = {
        "PATH": "/usr/bin",
        "HOME": "/home/x",
        "LANG": "de_DE.UTF-8",
        "LC_ALL": "de_DE.UTF-8",
        "TZ": "Europe/Berlin",
        "FONTCONFIG_FILE": "/etc/fonts/fonts.conf",
    }
    environ = {
        **needed,
        "EXSTREAM_API_TOKEN": "secret",
        "EXSTREAM_LOG_LEVEL": "DEBUG",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "LIBVA_DRIVER_NAME": "iHD",
        "LIBVA_DRIVERS_PATH": "/opt/va",
    }
    env = child_environment(
        environ, pass_env=["LIBVA_*", "EXSTREAM_*", "*TOKEN"], marker={"EXSTREAM_OWNER": "/d"}
    )
    assert env == {
        **needed,
        "LIBVA_DRIVER_NAME": "iHD",
        "LIBVA_DRIVERS_PATH": "/opt/va",
        "EXSTREAM_OWNER": "/d",  # the marker only: no EXSTREAM_* variable of the service
    }


def environ_of(output: bytes) -> dict[str, str]:
    return dict(v.split("=", 1) for v in output.decode().split("\0") if v)


async def test_a_child_gets_exactly_the_environment_it_is_given() -> None:
    env = {"PATH": os.defpath, "EXSTREAM_OWNER": "/srv/data"}  # no locale: Python adds one
    async with ManagedProcess(["cat", "/proc/self/environ"], env=env) as proc:
        output = await proc.stdout.read()
        assert await proc.wait() == 0
    assert environ_of(output) == env


async def test_a_child_by_default_gets_no_secret_of_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXSTREAM_API_TOKEN", "secret")
    monkeypatch.setenv("SOMETHING_ELSE", "private")
    async with ManagedProcess(["cat", "/proc/self/environ"]) as proc:
        env = environ_of(await proc.stdout.read())
    assert "PATH" in env
    assert "EXSTREAM_API_TOKEN" not in env and "SOMETHING_ELSE" not in env


async def test_ffprobe_gets_the_scrubbed_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXSTREAM_API_TOKEN", "secret")
    dump = tmp_path / "environ"
    ffprobe = tmp_path / "ffprobe"
    ffprobe.write_text(f"#!/bin/sh\ncat /proc/$$/environ > {dump}\nexit 1\n")
    ffprobe.chmod(0o755)
    (tmp_path / "a.mp4").write_bytes(b"")
    env = {"PATH": os.defpath, "EXSTREAM_OWNER": str(tmp_path)}
    await MediaScanner(str(ffprobe), ProbeCache(None), env=env).scan([str(tmp_path / "a.mp4")])
    assert environ_of(dump.read_bytes()) == env
    await MediaScanner(str(ffprobe), ProbeCache(None)).scan([str(tmp_path / "a.mp4")])
    assert "EXSTREAM_API_TOKEN" not in environ_of(dump.read_bytes())


async def test_a_child_does_not_inherit_ignored_sigpipe() -> None:
    # Python ignores SIGPIPE; a program that inherited that would not die of a closed pipe.
    async with ManagedProcess(["grep", "SigIgn", "/proc/self/status"]) as proc:
        ignored = int((await proc.stdout.read()).split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


async def test_a_missing_program_fails_the_start() -> None:
    with pytest.raises(FileNotFoundError) as error:
        await ManagedProcess(["/nonexistent/ffmpeg", "-version"]).start()
    assert error.value.errno == errno.ENOENT


def test_the_shim_runs_nothing_when_its_parent_is_already_gone() -> None:
    # The parent died between the fork and prctl(): the child is someone else's now.
    not_the_parent = str(os.getpid() + 1_000_000)
    argv = [not_the_parent, "/bin/echo", "echo", "ran"]
    result = run_python(_SHIM, *argv, flags=["-I", "-S"], timeout=30)
    assert (result.returncode, result.stdout) == (1, "")


HOLDER = """
import asyncio, sys
from service.process import ManagedProcess

async def main() -> None:
    process = ManagedProcess(["sleep", "600"])
    await process.start()
    print(process.pid, flush=True)
    await asyncio.Event().wait()  # held until the test kills this process

asyncio.run(main())
"""


def test_a_stopped_child_dies_with_a_killed_parent() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        wait_for(lambda: psutil.Process(child).name() == "sleep", 10, "the program to run")
        os.kill(child, signal.SIGSTOP)  # a hung process never sees its pipes close
        holder.kill()
        holder.wait(10)
        wait_for(lambda: not alive(child), 10, "the stopped child to die with its parent")
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
        if alive(child):
            os.kill(child, signal.SIGKILL)


PIPES_UNDER_FIRE = """
import asyncio, os, subprocess, threading, uvloop
from service.children import _PipeReader

errors = []
done = threading.Event()

def spawn() -> None:  # making pipes and forking, off the GIL, as the spawner thread does
    while not done.is_set():
        try:
            p = subprocess.Popen(["true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            p.stdout.close()
            p.stderr.close()
            p.wait()
        except OSError as exc:
            errors.append(exc)

async def cycle(times: int) -> None:
    for _ in range(times):
        try:
            read, write = os.pipe()
            reader = asyncio.StreamReader()
            pipe = _PipeReader(os.fdopen(read, "rb"), reader)
            os.write(write, b"x")
            os.close(write)
            assert await reader.read() == b"x"
            pipe.close()
        except OSError as exc:
            errors.append(exc)

threads = [threading.Thread(target=spawn) for _ in range(2)]
for thread in threads:
    thread.start()
try:
    uvloop.run(cycle(2000))
finally:
    done.set()
    for thread in threads:
        thread.join()
print(errors)
"""


def test_closing_a_childs_pipe_never_closes_another_threads_descriptor() -> None:
    """uvloop's pipe transports close each descriptor twice; another thread given the
    number in between lost it ("Bad file descriptor" in spawns; libuv itself can abort
    or hang on it). In an interpreter of its own, with a timeout, for that reason."""
    result = run_python(PIPES_UNDER_FIRE, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")
