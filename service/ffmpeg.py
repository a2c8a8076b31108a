"""ffmpeg command lines (pure) and the managed process that runs one.

A channel's process plays a *segment*: consecutive schedule entries of one media
signature joined by the concat demuxer and re-encoded to one H.264/AAC MPEG-TS stream,
paced in real time. Re-encoding through one encoder keeps timestamps going forward
across item boundaries (DESIGN.md, "Continuity across items").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from service.config import FfmpegSettings


@dataclass(frozen=True)
class Part:
    """One file of a segment: play `duration` seconds of `path` from `inpoint`."""

    path: str
    inpoint: float
    duration: float
    has_audio: bool = True


@dataclass(frozen=True)
class Segment:
    parts: tuple[Part, ...]
    seek: float = 0.0  # offset into the first part where playback starts

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts) - self.seek

    @property
    def has_audio(self) -> bool:
        return self.parts[0].has_audio if self.parts else False


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def _seekable(segment: Segment) -> Segment:
    """The first part's inpoint moved into the seek.

    The concat demuxer starts a file at the keyframe before `inpoint` and the decoder
    keeps those frames (up to a GOP of extra video); an input -ss drops them.
    """
    if not segment.parts or segment.parts[0].inpoint <= 0:
        return segment
    first = segment.parts[0]
    whole = Part(first.path, 0.0, first.inpoint + first.duration, first.has_audio)
    return Segment((whole, *segment.parts[1:]), segment.seek + first.inpoint)


def concat_list(segment: Segment) -> str:
    lines = ["ffconcat version 1.0"]
    for part in _seekable(segment).parts:
        lines.append(f"file {_quote(part.path)}")
        if part.inpoint > 0:
            lines.append(f"inpoint {part.inpoint:.6f}")
        lines.append(f"duration {part.duration:.6f}")
    return "\n".join(lines) + "\n"


def _encode_args(s: FfmpegSettings, ts_offset: float) -> list[str]:
    gop = max(1, round(s.gop_seconds * s.fps))
    video_filter = (
        f"scale={s.width}:{s.height}:force_original_aspect_ratio=decrease,"
        f"pad={s.width}:{s.height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={s.fps},format=yuv420p"
    )
    return [
        "-vf", video_filter,
        "-af", "aresample=async=1:first_pts=0",
        "-c:v", "libx264",
        "-preset", s.preset,
        "-tune", "zerolatency",
        "-profile:v", "high",
        "-g", str(gop),
        "-keyint_min", str(gop),
        "-sc_threshold", "0",
        "-b:v", str(s.video_bitrate),
        "-maxrate", str(s.video_bitrate),
        "-bufsize", str(s.video_bitrate),
        "-c:a", "aac",
        "-b:a", str(s.audio_bitrate),
        "-ar", "48000",
        "-ac", "2",
        "-output_ts_offset", f"{ts_offset:.3f}",
        "-f", "mpegts",
        "-flush_packets", "1",
        "pipe:1",
    ]  # fmt: skip


def segment_argv(
    s: FfmpegSettings, segment: Segment, list_path: Path, ts_offset: float = 0.0
) -> list[str]:
    argv = [s.ffmpeg, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "warning"]
    seek = _seekable(segment).seek
    if seek > 0:
        argv += ["-ss", f"{seek:.3f}"]
    argv += ["-re", "-f", "concat", "-safe", "0", "-i", str(list_path)]
    if segment.has_audio:
        argv += ["-map", "0:v:0", "-map", "0:a:0"]
    else:
        argv += ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]
        argv += ["-map", "0:v:0", "-map", "1:a:0", "-shortest"]
    return argv + _encode_args(s, ts_offset)


def slate_argv(s: FfmpegSettings, ts_offset: float = 0.0) -> list[str]:
    """An offline picture with silence, for a channel with nothing to play; runs until stopped."""
    return [
        s.ffmpeg, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "warning",
        "-re", "-f", "lavfi", "-i", f"smptehdbars=size={s.width}x{s.height}:rate={s.fps}",
        "-re", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo",
        "-map", "0:v:0", "-map", "1:a:0",
        *_encode_args(s, ts_offset),
    ]  # fmt: skip


def code_class(returncode: int) -> str:
    if returncode == 0:
        return "ok"
    return "signal" if returncode < 0 else "error"


class _Child:
    """A process started off the event loop, with its pipes and exit joined to the loop.

    asyncio (and uvloop) fork the whole server in the loop's thread, some 18 ms a spawn
    for a large process: a restart storm would stall every viewer. `subprocess.Popen`
    in a worker thread uses vfork; the exit is then seen through a pidfd on the loop.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        transports: list[asyncio.BaseTransport],
    ) -> None:
        self.popen = popen
        self.transports = transports
        self.pid = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._reap)

    @classmethod
    async def spawn(cls, argv: Sequence[str], limit: int) -> _Child:
        popen = await asyncio.to_thread(
            subprocess.Popen,
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        readers: list[asyncio.StreamReader] = []
        transports: list[asyncio.BaseTransport] = []
        try:
            for pipe in (popen.stdout, popen.stderr):
                reader = asyncio.StreamReader(limit=limit)
                protocol = functools.partial(asyncio.StreamReaderProtocol, reader)
                pipe_transport, _ = await loop.connect_read_pipe(protocol, pipe)
                readers.append(reader)
                transports.append(pipe_transport)
            return cls(popen, readers[0], readers[1], transports)
        except BaseException:
            for opened in transports:
                opened.close()
            popen.kill()
            await asyncio.to_thread(popen.wait)
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
        for transport in self.transports:
            transport.close()


class ManagedProcess:
    """A child in its own session; leaving the context always ends the whole group.

    SIGTERM (and SIGCONT, so a stopped process can act on it) -> bounded wait ->
    SIGKILL -> wait, also when the surrounding task is cancelled.
    """

    def __init__(
        self, argv: Sequence[str], *, term_timeout: float = 2.0, stderr_lines: int = 20
    ) -> None:
        self.argv = list(argv)
        self.term_timeout = term_timeout
        self.stderr_tail: deque[str] = deque(maxlen=stderr_lines)
        self._proc: _Child | None = None
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
        self._proc = await _Child.spawn(self.argv, limit=4 * 1024 * 1024)
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
