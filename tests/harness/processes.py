"""Processes that tests and benches start: each in a session of its own, stopped with
everything it started, even when the test failed."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
import psutil

from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a server under test, and `extra`: without EXSTREAM_*
    and OTEL_* variables, so a developer's own settings never reach it."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("EXSTREAM_", "OTEL_"))}
    return {**kept, **extra}


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int, name: str | None = None) -> list[psutil.Process]:
    """Live descendants of `pid`, optionally those whose command line mentions `name`."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if name is None or any(name in part for part in proc.cmdline()):
                found.append(proc)
    return found


def run_python(
    code: str, *args: str, flags: Sequence[str] = (), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`code` run to its end by an interpreter of its own, from the project's root, output
    captured: for what a test must not risk in its own (leaked descriptors, a hang)."""
    return subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    argv: Sequence[str],
    log_path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    open_files: int | None = None,
    output: int | None = None,
) -> subprocess.Popen[bytes]:
    """`argv` in a session of its own, its output to `log_path` (None: discarded) or to
    the file descriptor `output` (a pipe's write end, say); `open_files` sets its
    RLIMIT_NOFILE (soft and hard)."""

    def limit_open_files(limit: int) -> Callable[[], None]:
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with contextlib.ExitStack() as stack:
        log: IO[bytes] | int = subprocess.DEVNULL if output is None else output
        if log_path is not None:
            log = stack.enter_context(log_path.open("wb"))
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=limit_open_files(open_files) if open_files is not None else None,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout` s; whatever it started is killed too."""
    left = descendants(process.pid)
    for child in left:  # a stopped child could not act on the SIGTERM its parent sends
        with contextlib.suppress(psutil.Error):
            child.resume()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    for child in left:
        with contextlib.suppress(psutil.Error):
            child.kill()


def log_tail(log_path: Path | None, size: int = 3000) -> str:
    if log_path is None or not log_path.exists():
        return "(no log)"
    return log_path.read_text(encoding="utf-8", errors="replace")[-size:]


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log_path: Path | None, timeout: float
) -> None:
    """Until `url` answers 200; fails at once, with the log's end, if the process exits."""

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args!r} exited with code {process.returncode}:\n{log_tail(log_path)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=5).status_code == 200
        return False

    wait_for(ready, timeout, f"{url} to answer")


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    log_path: Path | None,
    *,
    ready_url: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    open_files: int | None = None,
    output: int | None = None,
    ready_timeout: float = 60,
    stop_timeout: float = 10,
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` started (see `start`), once `ready_url` answers 200 (if given); stopped at the
    end of the block (see `stop`)."""
    process = start(argv, log_path, env=env, cwd=cwd, open_files=open_files, output=output)
    try:
        if ready_url is not None:
            wait_ready(process, ready_url, log_path, ready_timeout)
        yield process
    finally:
        stop(process, stop_timeout)
