"""A child process managed as a group: started through service/children.py, its stderr's
last lines kept, and always ended, whole group, when its context is left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType

from service.children import Child, child_environment


class ManagedProcess:
    """A child in its own session; leaving the context always ends the whole group.

    SIGTERM (and SIGCONT, so a stopped process can act on it) -> bounded wait ->
    SIGKILL -> wait, also when the surrounding task is cancelled. If exstream itself
    dies, the kernel kills the process (service/children.py).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        term_timeout: float = 2.0,
        stderr_lines: int = 20,
    ) -> None:
        self.argv = list(argv)
        # The service passes the environment it built once; the default is as scrubbed.
        self.env = dict(env) if env is not None else child_environment(os.environ)
        self.term_timeout = term_timeout
        self.stderr_tail: deque[str] = deque(maxlen=stderr_lines)
        self._proc: Child | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self._proc is not None
        return self._proc.stdout

    async def start(self) -> None:
        # The pipe is paused at twice this much unread: the channel's work-ahead, not
        # this buffer, decides how far a process runs ahead.
        self._proc = await Child.spawn(self.argv, self.env, limit=64 * 1024)
        self._stderr_task = asyncio.create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self._proc is not None
        while line := await self._proc.stderr.readline():
            self.stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    async def wait(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        return code

    def signal_group(self, signum: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    async def terminate(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.returncode is None:
                self.signal_group(signal.SIGTERM)
                self.signal_group(signal.SIGCONT)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), self.term_timeout)
            self.signal_group(signal.SIGKILL)
            await proc.wait()
        finally:
            proc.close()
            if self._stderr_task is not None:
                self._stderr_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._stderr_task
        return proc.returncode

    async def __aenter__(self) -> ManagedProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded so a cancellation cannot leave the group alive half-way through.
        task = asyncio.ensure_future(self.terminate())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
