"""The media library: expanding configured paths and probing files with ffprobe.

Probe results are cached in SQLite by path, mtime and size (in memory when the data
disk fails), so a rescan only probes new or changed files. Unreadable or corrupt files
are skipped and reported, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from loguru import logger

from service.children import child_environment
from service.config import GLOB_CHARS
from service.metadata import Programme, from_file_tags, from_name, merge
from service.nfo import NfoReader
from service.storage import (
    DAMAGED,
    Fault,
    StoreHealth,
    check_integrity,
    open_store,
    replace_damaged,
)
from service.tools import run_tool
from telemetry.metrics import Metrics

MEDIA_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".ts", ".m2ts", ".mts"}
    | {".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp"}
    | {".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wav", ".ac3", ".mka"}
)
CACHE_VERSION = 3  # bumped when MediaItem changes: older probe results are probed again


@dataclass(frozen=True)
class MediaItem:
    path: str
    duration: float
    title: str
    video_codec: str
    audio_codec: str | None
    width: int
    height: int
    # Absolute stream indexes in the file, as ffmpeg's `-map 0:N` takes them.
    video_index: int | None = None  # None: audio only (a still picture is shown)
    audio_index: int | None = None  # the default track; None: video only (silence)
    cover_index: int | None = None  # an attached picture, for audio-only files
    interlaced: bool = False
    # What the guide says of it. Cached: the file's tags; scanned: merged with its .nfo
    # files and name (`title` is then its one-line label).
    programme: Programme = field(default_factory=Programme)

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def has_video(self) -> bool:
        return self.video_index is not None


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str  # metric label: unreadable, no_streams, timeout
    detail: str


@dataclass
class ScanResult:
    items: list[MediaItem] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def expand(patterns: Iterable[str]) -> list[Path]:
    """Files named by `patterns` (files, directories searched recursively, globs), in order."""
    seen: set[Path] = set()
    found: list[Path] = []
    for pattern in patterns:
        if GLOB_CHARS & set(pattern):
            matches = glob.glob(pattern, recursive=True)  # noqa: PTH207 (absolute patterns)
            candidates = [Path(p) for p in sorted(matches)]
        else:
            candidates = [Path(pattern)]
        for path in candidates:
            if path.is_dir():
                files = sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES
                )
            else:
                files = [path]
            for file in files:
                if file not in seen:
                    seen.add(file)
                    found.append(file)
    return found


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _flag(stream: dict[str, object], name: str) -> bool:
    return bool(_dict(stream.get("disposition")).get(name))


def _index(stream: dict[str, object]) -> int | None:
    value = stream.get("index")
    return value if isinstance(value, int) else None


def item_from_probe(path: str, probe: dict[str, object]) -> MediaItem | Skipped:
    streams = probe.get("streams")
    fmt = probe.get("format")
    if not isinstance(streams, list) or not isinstance(fmt, dict):
        return Skipped(path, "unreadable", "ffprobe found no streams")
    all_streams = [s for s in streams if isinstance(s, dict) and _index(s) is not None]
    videos = [s for s in all_streams if s.get("codec_type") == "video"]
    # Cover art is a video stream of one picture: never the programme's video.
    pictures = [s for s in videos if _flag(s, "attached_pic")]
    moving = [s for s in videos if not _flag(s, "attached_pic")]
    audios = [s for s in all_streams if s.get("codec_type") == "audio"]
    video = next(iter(moving), None)
    audio = next((s for s in audios if _flag(s, "default")), next(iter(audios), None))
    if video is None and audio is None:
        return Skipped(path, "no_streams", "no video or audio stream")
    timed = video or audio
    assert timed is not None
    try:
        duration = float(fmt.get("duration") or timed.get("duration") or 0)
    except (TypeError, ValueError):
        duration = 0.0
    if not duration > 0.5:
        return Skipped(path, "unreadable", f"unknown or too short duration ({duration:g}s)")
    played = [_dict(s.get("tags")) for s in (video, audio) if s is not None]
    programme = from_file_tags(_dict(fmt.get("tags")), played)
    title = merge(programme, from_name(Path(path).stem)).label or Path(path).stem
    field_order = str((video or {}).get("field_order") or "progressive")
    return MediaItem(
        path=path,
        duration=duration,
        title=title,
        video_codec=str(video.get("codec_name", "unknown")) if video else "none",
        audio_codec=str(audio.get("codec_name", "unknown")) if audio else None,
        width=int(str(video.get("width") or 0)) if video else 0,
        height=int(str(video.get("height") or 0)) if video else 0,
        video_index=_index(video) if video else None,
        audio_index=_index(audio) if audio else None,
        cover_index=_index(pictures[0]) if pictures and video is None else None,
        interlaced=field_order not in ("progressive", "unknown"),
        programme=programme,
    )


def described(item: MediaItem, nfo: NfoReader) -> MediaItem:
    """`item` with its programme from its tags, then its .nfo files, then its name."""
    path = Path(item.path)
    programme = merge(item.programme, nfo.programme(path), from_name(path.stem))
    return replace(item, programme=programme, title=programme.label or path.stem)


def _item_from_json(data: dict[str, Any]) -> MediaItem:
    programme = dict(data.pop("programme"))
    programme["categories"] = tuple(programme["categories"])  # a list in JSON
    return MediaItem(**data, programme=Programme(**programme))


class ProbeCache:
    """SQLite cache of probe results keyed by path, mtime and size.

    A pure cache: when its file cannot be used (a read-only or full disk, an I/O error),
    results are kept in memory and the file is tried again, at a lookup, every
    `reopen_interval` seconds; a damaged file is moved aside and created again.
    """

    def __init__(
        self,
        path: Path | None,
        health: StoreHealth | None = None,
        *,
        reopen_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect,
    ) -> None:
        self.path = path
        self.health = health if health is not None else probe_cache_health(path)
        self.reopen_interval = reopen_interval
        self.clock = clock
        self.connect = connect
        self._reopen_at = math.inf  # finite while in memory in place of the file
        self._db = _memory()
        if path is not None:
            self._use(open_store(path, self._open_file, self.health))

    def _open_file(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self.connect(self.path, check_same_thread=False)
        try:
            check_integrity(db)
            _create_table(db)
            # Reading works on a read-only or full disk: only a write shows the store works.
            with db:
                db.execute(f"INSERT OR REPLACE INTO {_TABLE} VALUES ('', 0, 0, 'null')")
                db.execute(f"DELETE FROM {_TABLE} WHERE path = ''")
        except BaseException:
            db.close()
            raise
        return db

    def _use(self, db: sqlite3.Connection | None) -> None:
        """The file from now on, or (None) memory until the next try."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if db is None:
            self._db = _memory()
            self._reopen_at = self.clock() + self.reopen_interval
        else:
            self._db = db
            self._reopen_at = math.inf
            self.health.recover()

    def _failed(self, exc: sqlite3.Error) -> None:
        if self.path is None:  # memory itself failed: start again empty
            self._db = _memory()
            return
        fault = Fault.of(exc)
        if fault.reason == DAMAGED:
            self._db.close()
            self._use(replace_damaged(self.path, fault, self._open_file, self.health))
        else:
            self.health.degrade(fault)
            self._use(None)

    def _reopen_when_due(self) -> None:
        if self.path is not None and self.clock() >= self._reopen_at:
            self._use(open_store(self.path, self._open_file, self.health))

    def get(self, path: str, mtime_ns: int, size: int) -> MediaItem | Skipped | None:
        self._reopen_when_due()
        try:
            row = self._db.execute(
                f"SELECT result FROM {_TABLE} WHERE path = ? AND mtime_ns = ? AND size = ?",
                (path, mtime_ns, size),
            ).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None  # a miss: the file is probed again
        if row is None:
            return None
        data = json.loads(row[0])
        kind = data.pop("kind")
        return _item_from_json(data) if kind == "item" else Skipped(**data)

    def put(self, path: str, mtime_ns: int, size: int, result: MediaItem | Skipped) -> None:
        self._reopen_when_due()
        kind = "item" if isinstance(result, MediaItem) else "skipped"
        row = (path, mtime_ns, size, json.dumps({"kind": kind, **asdict(result)}))
        try:
            self._write(row)
        except sqlite3.Error as exc:
            self._failed(exc)
            self._write(row)  # into the new file, or memory

    def _write(self, row: tuple[str, int, int, str]) -> None:
        with self._db:
            self._db.execute(f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?)", row)

    def close(self) -> None:
        self._db.close()


_TABLE = f"probe_v{CACHE_VERSION}"


def probe_cache_health(path: Path | None, metrics: Metrics | None = None) -> StoreHealth:
    return StoreHealth(
        "probe_cache",
        "probe cache",
        "probe results are kept in memory only (a restart probes every file again)",
        metrics,
        path=path,
    )


def _memory() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    _create_table(db)
    return db


def _create_table(db: sqlite3.Connection) -> None:
    with db:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {_TABLE}"
            " (path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, result TEXT)"
        )


Progress = Callable[[int, int], None]


class MediaScanner:
    def __init__(
        self,
        ffprobe: str,
        cache: ProbeCache,
        *,
        timeout: float = 30.0,
        concurrency: int = 4,
        progress: Progress | None = None,
        env: Mapping[str, str] | None = None,
        nfo: NfoReader | None = None,
    ) -> None:
        self.ffprobe = ffprobe
        self.cache = cache
        self.nfo = nfo if nfo is not None else NfoReader()
        self.timeout = timeout
        self.concurrency = concurrency
        self.progress = progress
        # The service passes the environment it built once; the default is as scrubbed.
        self.env = dict(env) if env is not None else child_environment(os.environ)

    async def scan(self, patterns: Sequence[str]) -> ScanResult:
        files = await asyncio.to_thread(expand, patterns)
        limit = asyncio.Semaphore(self.concurrency)
        done = 0

        async def one(path: Path) -> MediaItem | Skipped:
            nonlocal done
            async with limit:
                result = await self.probe(path)
            done += 1
            if self.progress is not None:
                self.progress(done, len(files))
            return result

        results = await asyncio.gather(*(one(p) for p in files))
        scan = ScanResult()
        for result in results:
            if isinstance(result, MediaItem):
                scan.items.append(result)
            else:
                scan.skipped.append(result)
        # Read at every scan, not cached with the probe: an edited .nfo shows at the next.
        scan.items = await asyncio.to_thread(self._describe, scan.items)
        return scan

    def _describe(self, items: list[MediaItem]) -> list[MediaItem]:
        return [described(item, self.nfo) for item in items]

    async def probe(self, path: Path) -> MediaItem | Skipped:
        name = str(path)
        try:
            stat = path.stat()  # noqa: ASYNC240 (one stat, not worth a thread)
        except OSError as exc:
            return Skipped(name, "unreadable", exc.strerror or str(exc))
        cached = self.cache.get(name, stat.st_mtime_ns, stat.st_size)
        if cached is not None:
            return cached
        result = await self._run_ffprobe(name)
        if not (isinstance(result, Skipped) and result.reason == "timeout"):
            self.cache.put(name, stat.st_mtime_ns, stat.st_size, result)
        return result

    async def _run_ffprobe(self, path: str) -> MediaItem | Skipped:
        argv = [
            self.ffprobe, "-v", "error", "-print_format", "json",
            "-show_format", "-show_streams", "--", path,
        ]  # fmt: skip
        try:
            run = await run_tool(argv, self.env, self.timeout)
        except TimeoutError:  # an OSError too: first
            return Skipped(path, "timeout", f"ffprobe took longer than {self.timeout:g}s")
        except OSError as exc:
            return Skipped(path, "unreadable", f"cannot run ffprobe: {exc}")
        if run.code != 0:
            detail = run.err.decode("utf-8", "replace").strip().splitlines()
            return Skipped(path, "unreadable", detail[-1] if detail else "ffprobe failed")
        try:
            probe = json.loads(run.out)
        except ValueError:
            return Skipped(path, "unreadable", "ffprobe printed no JSON")
        return item_from_probe(path, probe)


def log_progress(label: str, every: float = 2.0) -> Progress:
    """A progress callback that logs at most every `every` seconds, and at the end."""
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= every:
            last = now
            logger.info("scanning media for {}: {}/{} files", label, done, total)

    return report
