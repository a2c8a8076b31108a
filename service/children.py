"""Child processes: their environment (ffmpeg's and ffprobe's), ffmpeg's start and pipes.

A child gets a scrubbed environment: the few variables ffmpeg needs (search path,
locale, time zone, temporary directory, fontconfig), those the operator passes on with
`[ffmpeg] pass_env`, and the marker of its owner (service/orphans.py). Never an
`EXSTREAM_*` variable of the service's own (the API token is one).

A child started here dies with exstream, even a stopped or hung one that would never
notice its closed pipes: a shim sets a parent-death signal (SIGKILL) in the child, then
runs the program in its place (same pid). The shim is a fresh interpreter (some 10-20 ms
of CPU in the child) rather than a `preexec_fn`, which would make Popen fork the whole
server instead of vfork it, holding the GIL meanwhile: about 16 ms of stalled event loop
per spawn for a 400 MB server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO

# What ffmpeg and ffprobe read from their environment, as far as exstream uses them.
KEPT = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR"}
    | {"FONTCONFIG_FILE", "FONTCONFIG_PATH", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"}
)
KEPT_PREFIXES = ("LC_",)
SECRET_PREFIX = "EXSTREAM_"  # never passed on, whatever pass_env says
READ_SIZE = 64 * 1024  # a pipe's default capacity

# Runs in the child, before the program. A parent that died before prctl() took effect
# sent no signal: getppid() then names another process, and the child ends at once.
# Python ignores SIGPIPE and SIGXFSZ, and exec() keeps ignored signals ignored; it may
# also have set LC_CTYPE (PEP 538): the program gets the environment as it was given.
_SHIM = """\
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
with open("/proc/self/environ", "rb") as given:
    env = dict(v.split(b"=", 1) for v in given.read().split(b"\\0") if b"=" in v)
try:
    os.execve(sys.argv[2], sys.argv[3:], env)
except OSError as exc:
    os.write(2, f"cannot run {sys.argv[2]}: {exc.strerror}\\n".encode())
    os._exit(127)
"""

# The parent-death signal fires when the *thread* that forked the child ends, not the
# process. Every child is forked by this one thread, which lives as long as the
# interpreter: executor threads never retire while idle, and this executor is never
# shut down (asyncio's default executor is, with its event loop).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exstream-spawner")


def child_environment(
    environ: Mapping[str, str],
    *,
    pass_env: Sequence[str] = (),
    marker: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a child: the kept variables of `environ`, those matching a
    `pass_env` pattern (fnmatch), and the `marker`."""

    def kept(name: str) -> bool:
        if name.startswith(SECRET_PREFIX):
            return False
        if name in KEPT or name.startswith(KEPT_PREFIXES):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in pass_env)

    env = {name: value for name, value in environ.items() if kept(name)}
    env.update(marker or {})
    return env


def _popen(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    # Found here, with the child's own PATH, so that a missing program is an OSError of
    # the spawn (as without the shim), not an exit code of the shim.
    program = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if program is None:
        raise FileNotFoundError(errno.ENOENT, "no such executable", argv[0])
    shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(os.getpid()), program, *argv]
    return subprocess.Popen(
        shim,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


async def _discard(popen: subprocess.Popen[bytes]) -> None:
    """End a process that will not be used: close its pipes, kill its group, reap it."""
    for pipe in (popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    await asyncio.to_thread(popen.wait)


class _PipeReader(asyncio.ReadTransport):
    """Feeds a child's pipe to a StreamReader (pausing while it is full) and closes the
    pipe exactly once.

    Not the loop's connect_read_pipe(): uvloop closes such a pipe twice, libuv closing
    the descriptor and then the file object closing the same number. Between the two,
    another thread can be given that number (the spawner making a child's pipes, the
    log store opening a file), and the second close takes it from under it: spawns failed
    with "Bad file descriptor" during restart storms.
    """

    def __init__(self, pipe: IO[bytes], reader: asyncio.StreamReader) -> None:
        super().__init__()
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._reader = reader
        self._loop = asyncio.get_running_loop()
        self._reading = False
        os.set_blocking(self._fd, False)
        reader.set_transport(self)
        self.resume_reading()

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._reader.set_exception(exc)
            self.close()
            return
        if data:
            self._reader.feed_data(data)
        else:
            self._reader.feed_eof()
            self.close()

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._pipe.closed:
            self._loop.add_reader(self._fd, self._ready)
            self._reading = True

    def is_reading(self) -> bool:
        return self._reading

    def is_closing(self) -> bool:
        return self._pipe.closed

    def close(self) -> None:
        self.pause_reading()
        self._pipe.close()


class Child:
    """A process started off the event loop, with its pipes and exit joined to the loop.

    asyncio (and uvloop) fork the whole server in the loop's thread, some 18 ms a spawn
    for a large process: a restart storm would stall every viewer. `subprocess.Popen`
    in the spawner thread uses vfork; the exit is then seen through a pidfd on the loop.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        pipes: list[_PipeReader],
    ) -> None:
        self.popen = popen
        self.pipes = pipes
        self.pid = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._reap)

    @classmethod
    async def spawn(cls, argv: Sequence[str], env: Mapping[str, str], limit: int) -> Child:
        loop = asyncio.get_running_loop()
        starting = loop.run_in_executor(_SPAWNER, _popen, list(argv), dict(env))
        try:
            popen = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Cancelled while the thread starts it: the process still comes; end it.
            with contextlib.suppress(Exception):
                await _discard(await starting)
            raise
        pipes: list[_PipeReader] = []
        try:
            readers = []
            for pipe in (popen.stdout, popen.stderr):
                assert pipe is not None  # both are PIPE
                reader = asyncio.StreamReader(limit=limit)
                pipes.append(_PipeReader(pipe, reader))
                readers.append(reader)
            return cls(popen, readers[0], readers[1], pipes)
        except BaseException:
            for opened in pipes:
                opened.close()
            await _discard(popen)  # and the pipes not joined to the loop yet
            raise

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def _reap(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        code = self.popen.wait()  # the pidfd is readable: the child has ended, no blocking
        if not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def close(self) -> None:
        """Close the pipes (after the exit): a reader that stopped reading leaves them open."""
        for pipe in self.pipes:
            pipe.close()
