"""The configured ffmpeg and ffprobe, tried once: that they run, that they are what they
are said to be, and that ffmpeg encodes what the channels will ask of it (H.264 with the
configured preset, AAC), so a broken tool is an error naming its key before any channel
loops on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.config import FfmpegSettings

TOOL_TIMEOUT = 20.0
TAIL = 300  # characters of a failing tool's stderr kept in the message


@dataclass(frozen=True, slots=True)
class ToolProblem:
    key: str  # the config key to fix, e.g. "ffmpeg.preset"
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True, slots=True)
class ToolRun:
    code: int
    out: bytes
    err: bytes


async def run_tool(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> ToolRun:
    """Run a short-lived tool to its end; OSError if it cannot start, TimeoutError (after
    killing it) if it outlives `timeout`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return ToolRun(proc.returncode, out, err)


def _tail(output: bytes) -> str:
    text = " ".join(output.decode(errors="replace").split())
    return text if len(text) <= TAIL else "..." + text[-TAIL:]


async def _version(
    key: str, program: str, name: str, env: Mapping[str, str], timeout: float
) -> ToolProblem | None:
    try:
        run = await run_tool([program, "-hide_banner", "-version"], env, timeout)
    except TimeoutError:  # an OSError too: first
        return ToolProblem(key, f"{program!r} -version did not answer within {timeout:g}s")
    except OSError as exc:
        return ToolProblem(key, f"cannot run {program!r}: {exc.strerror or exc}")
    if run.code != 0 or not run.out.startswith(f"{name} version".encode()):
        detail = _tail(run.err or run.out) or "no output"
        return ToolProblem(key, f"{program!r} is not a working {name} (exit {run.code}: {detail})")
    return None


def encode_test_argv(s: FfmpegSettings) -> list[str]:
    """One frame and a little sound, encoded the way every channel encodes, to nowhere."""
    return [
        s.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", "color=size=64x64:rate=25",
        "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo",
        "-frames:v", "1", "-t", "0.1",
        "-c:v", "libx264", "-preset", s.preset, "-tune", "zerolatency", "-profile:v", "high",
        "-c:a", "aac", "-b:a", str(s.audio_bitrate),
        "-f", "null", "-",
    ]  # fmt: skip


async def check_tools(
    s: FfmpegSettings, env: Mapping[str, str], *, timeout: float = TOOL_TIMEOUT
) -> list[ToolProblem]:
    """Every problem found with the configured tools; empty when both work."""
    ffmpeg, ffprobe = await asyncio.gather(
        _version("ffmpeg.ffmpeg", s.ffmpeg, "ffmpeg", env, timeout),
        _version("ffmpeg.ffprobe", s.ffprobe, "ffprobe", env, timeout),
    )
    problems = [p for p in (ffmpeg, ffprobe) if p is not None]
    if ffmpeg is not None:
        return problems
    try:
        run = await run_tool(encode_test_argv(s), env, timeout)
    except (OSError, TimeoutError) as exc:
        return [*problems, ToolProblem("ffmpeg.ffmpeg", f"a test encode failed: {exc}")]
    if run.code != 0:
        err = run.err.decode(errors="replace")
        if f"preset/tune {s.preset}" in err or "Error setting preset" in err:
            key, what = "ffmpeg.preset", f"libx264 has no preset {s.preset!r}"
        elif "Unknown encoder" in err or "Encoder not found" in err:
            key, what = "ffmpeg.ffmpeg", f"{s.ffmpeg!r} lacks an encoder exstream needs"
        else:
            key, what = "ffmpeg.ffmpeg", f"a test encode with {s.ffmpeg!r} failed"
        problems.append(ToolProblem(key, f"{what} (exit {run.code}: {_tail(run.err)})"))
    return problems
