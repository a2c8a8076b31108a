"""The slate clip: a short pre-encoded offline picture (bars and silence) in the
channels' output format, made once at start-up and shared by every channel. The
splicer loops its frames as filler: for a channel with nothing to play, for the gap
after an item that could not play, and whenever a process is late, so a viewer sees
the slate instead of a frozen picture.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from loguru import logger

from service.config import FfmpegSettings
from service.ffmpeg import slate_argv
from service.process import ManagedProcess

MAX_BYTES = 32 * 1024 * 1024


class SlateClip:
    def __init__(
        self,
        settings: FfmpegSettings,
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.env = env
        self.clip: bytes | None = None
        self.error: str | None = None
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._make(), name="slate-clip")

    async def wait(self, timeout: float) -> bytes | None:
        """The clip, once made; None if making it failed or takes longer than `timeout`."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._done.wait()
        return self.clip

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _make(self) -> None:
        seconds = max(1.0, self.settings.gop_seconds)
        argv = slate_argv(self.settings, seconds)
        try:
            async with asyncio.timeout(self.timeout), ManagedProcess(argv, env=self.env) as proc:
                data = b""
                while piece := await proc.stdout.read(1 << 20):
                    data += piece
                    if len(data) > MAX_BYTES:
                        raise RuntimeError(f"more than {MAX_BYTES} bytes")
                code = await proc.wait()
            if code != 0 or not data:
                tail = " | ".join(proc.stderr_tail)
                raise RuntimeError(f"exit code {code} after {len(data)} bytes: {tail}")
            self.clip = data
            logger.info("slate clip ready: {:g}s, {} bytes", seconds, len(data))
        except (OSError, RuntimeError, TimeoutError) as exc:
            self.error = str(exc) or type(exc).__name__
            logger.warning("no slate clip, channels cannot fill gaps: {}", self.error)
        finally:
            self._done.set()
