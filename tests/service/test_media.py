from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.demo import make_clip
from service.media import (
    CACHE_VERSION,
    MediaItem,
    MediaScanner,
    ProbeCache,
    Skipped,
    expand,
    item_from_probe,
    probe_cache_health,
)
from service.metadata import Programme
from telemetry.metrics import Metrics
from tests.conftest import FakeClock
from tests.damage import DAMAGES
from tests.loglines import capturing, level_and_message

Clips = Callable[[int, float], list[Path]]


def counting_ffprobe(tmp_path: Path) -> tuple[str, Path]:
    """An ffprobe wrapper that logs each run, so tests can count them."""
    log = tmp_path / "ffprobe.log"
    script = tmp_path / "ffprobe-counting"
    real = shutil.which("ffprobe")
    assert real is not None
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    return str(script), log


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def library(tmp_path: Path, clips: Clips) -> Path:
    root = tmp_path / "library"
    (root / "nested" / "deeper").mkdir(parents=True)
    good = clips(2, 1.5)
    shutil.copy(good[0], root / "a.mp4")
    shutil.copy(good[1], root / "nested" / "deeper" / "b.MP4")
    (root / "notes.txt").write_text("not media, not even looked at\n")
    (root / "random.mp4").write_bytes(random.Random(7).randbytes(20_000))
    (root / "text.mkv").write_text("hello, I am a text file\n" * 50)
    data = good[0].read_bytes()
    (root / "nested" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root


async def test_scan_finds_media_recursively_and_skips_bad_files(library: Path) -> None:
    progress: list[tuple[int, int]] = []
    scanner = MediaScanner(
        "ffprobe", ProbeCache(None), progress=lambda d, t: progress.append((d, t))
    )
    result = await scanner.scan([str(library)])
    assert sorted(Path(i.path).name for i in result.items) == ["a.mp4", "b.MP4"]
    for item in result.items:
        assert item.duration == pytest.approx(1.5, abs=0.2)
        assert (item.video_codec, item.audio_codec) == ("h264", "aac")
        assert (item.width, item.height) == (320, 240)
        assert (item.video_index, item.audio_index, item.cover_index) == (0, 1, None)
        assert item.has_audio
        assert item.has_video
        assert not item.interlaced
        assert item.title == Path(item.path).stem
    skipped = {Path(s.path).name: s for s in result.skipped}
    assert set(skipped) == {"random.mp4", "text.mkv", "truncated.mp4"}
    for entry in skipped.values():
        assert entry.reason == "unreadable"
        assert entry.detail
    assert progress[-1] == (5, 5)
    assert [d for d, _ in progress] == [1, 2, 3, 4, 5]


async def test_second_scan_runs_no_ffprobe(library: Path, tmp_path: Path) -> None:
    ffprobe, log = counting_ffprobe(tmp_path)
    cache = ProbeCache(tmp_path / "probe.sqlite")
    first = await MediaScanner(ffprobe, cache).scan([str(library)])
    assert runs(log) == 5
    second = await MediaScanner(ffprobe, cache).scan([str(library)])
    assert runs(log) == 5
    assert second.items == first.items
    assert second.skipped == first.skipped
    cache.close()
    # The cache is on disk: a new process (a new ProbeCache) still needs no probes.
    reopened = ProbeCache(tmp_path / "probe.sqlite")
    third = await MediaScanner(ffprobe, reopened).scan([str(library)])
    assert runs(log) == 5
    assert third.items == first.items
    # A changed file (new mtime) is probed again, and only that one.
    changed = library / "a.mp4"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    await MediaScanner(ffprobe, reopened).scan([str(library)])
    assert runs(log) == 6
    assert log.read_text().splitlines()[-1].endswith(str(changed))
    reopened.close()


async def test_a_scan_describes_items_and_sees_an_edited_nfo_without_probing(
    tmp_path: Path, clips: Clips
) -> None:
    ffprobe, log = counting_ffprobe(tmp_path)
    (clip,) = clips(1, 1.5)
    episode = tmp_path / "Show - S01E02 - Pilot.mp4"
    shutil.copy(clip, episode)
    scanner = MediaScanner(ffprobe, ProbeCache(None))
    (item,) = (await scanner.scan([str(episode)])).items
    assert item.programme == Programme(show="Show", title="Pilot", season=1, episode=2)
    assert item.title == "Show - S01E02 - Pilot"

    nfo = episode.with_suffix(".nfo")
    nfo.write_text("<episodedetails><title>Renamed</title><plot>Plot.</plot></episodedetails>")
    (item,) = (await scanner.scan([str(episode)])).items
    assert item.programme == Programme(
        show="Show", title="Renamed", season=1, episode=2, desc="Plot."
    )
    assert item.title == "Show - S01E02 - Renamed"
    nfo.write_text("<episodedetails><title>Again</title></episodedetails>")
    (item,) = (await scanner.scan([str(episode)])).items
    assert item.programme.title == "Again"
    assert runs(log) == 1  # the media were probed once: the .nfo is read beside the cache


async def test_missing_file_is_skipped(tmp_path: Path, clips: Clips) -> None:
    (good,) = clips(1, 1.5)
    gone = tmp_path / "gone.mp4"
    result = await MediaScanner("ffprobe", ProbeCache(None)).scan([str(gone), str(good)])
    assert [i.path for i in result.items] == [str(good)]
    (skipped,) = result.skipped
    assert (skipped.path, skipped.reason) == (str(gone), "unreadable")
    assert "No such file" in skipped.detail


async def test_globs_select_files(library: Path) -> None:
    scanner = MediaScanner("ffprobe", ProbeCache(None))
    top = await scanner.scan([str(library / "*.mp4")])
    assert sorted(Path(i.path).name for i in top.items) == ["a.mp4"]
    assert sorted(Path(s.path).name for s in top.skipped) == ["random.mp4"]
    deep = expand([str(library / "**" / "*.mp4")])
    assert sorted(p.name for p in deep) == ["a.mp4", "random.mp4", "truncated.mp4"]
    # A glob that names a directory searches it.
    assert [p.name for p in expand([str(library / "nest*")])] == ["b.MP4", "truncated.mp4"]


def test_expand_keeps_order_and_drops_duplicates(library: Path) -> None:
    a = library / "a.mp4"
    found = expand([str(a), str(library), str(library / "*.mp4")])
    assert found[0] == a
    assert len(found) == len(set(found)) == 5


async def test_slow_ffprobe_times_out_and_is_not_cached(tmp_path: Path, clips: Clips) -> None:
    (good,) = clips(1, 1.5)
    slow = tmp_path / "slow-ffprobe"
    slow.write_text("#!/bin/sh\nexec sleep 60\n")
    slow.chmod(0o755)
    cache = ProbeCache(None)
    result = await MediaScanner(str(slow), cache, timeout=0.3).scan([str(good)])
    (skipped,) = result.skipped
    assert skipped.reason == "timeout"
    stat = good.stat()
    assert cache.get(str(good), stat.st_mtime_ns, stat.st_size) is None
    # A later scan with a working ffprobe is not stuck with the timeout.
    later = await MediaScanner("ffprobe", cache).scan([str(good)])
    assert [i.path for i in later.items] == [str(good)]


async def test_missing_ffprobe_is_a_skip_not_a_crash(tmp_path: Path, clips: Clips) -> None:
    (good,) = clips(1, 1.5)
    scanner = MediaScanner(str(tmp_path / "no-ffprobe"), ProbeCache(None))
    (skipped,) = (await scanner.scan([str(good)])).skipped
    assert skipped.reason == "unreadable"
    assert skipped.detail.startswith("cannot run ffprobe")


async def test_video_only_clip_has_no_audio(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "silent.mp4", 1.0, size="160x120", audio=False)
    (item,) = (await MediaScanner("ffprobe", ProbeCache(None)).scan([str(clip)])).items
    assert item.audio_codec is None
    assert item.audio_index is None
    assert not item.has_audio
    assert item.video_index == 0
    assert item.has_video


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files that are not plain H.264/AAC: what item_from_probe tells apart, for real."""
    root = tmp_path_factory.mktemp("kinds")
    sine = ("-f", "lavfi", "-i", "sine=frequency=440:duration=1")
    ffmpeg(*sine, "-c:a", "libmp3lame", str(root / "song.mp3"))
    ffmpeg(
        *sine, "-f", "lavfi", "-i", "color=c=blue:s=32x32:d=1",
        "-map", "0:a", "-map", "1:v", "-frames:v", "1", "-c:a", "aac",
        "-c:v", "png", "-disposition:v:0", "attached_pic", str(root / "cover.m4a"),
    )  # fmt: skip
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
        *sine, "-f", "lavfi", "-i", "sine=frequency=880:duration=1",
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-disposition:a:0", "0", "-disposition:a:1", "default",
        str(root / "two-tracks.mkv"),
    )  # fmt: skip
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
        "-vf", "setfield=tff", "-flags", "+ilme+ildct", "-c:v", "libx264",
        "-preset", "ultrafast", "-x264opts", "tff=1", str(root / "interlaced.mkv"),
    )  # fmt: skip
    subtitles = root / "subtitles.srt"
    subtitles.write_text("1\n00:00:00,500 --> 00:00:01,500\nhello\n\n", encoding="utf-8")
    ffmpeg("-i", str(subtitles), str(root / "subtitles-only.mkv"))
    subtitles.unlink()
    return root


async def test_real_files_of_every_kind(kinds: Path) -> None:
    result = await MediaScanner("ffprobe", ProbeCache(None)).scan([str(kinds)])
    items = {Path(i.path).name: i for i in result.items}
    assert set(items) == {"song.mp3", "cover.m4a", "two-tracks.mkv", "interlaced.mkv"}
    song = items["song.mp3"]
    assert (song.video_index, song.audio_index, song.cover_index) == (None, 0, None)
    assert (song.video_codec, song.audio_codec, song.width, song.height) == ("none", "mp3", 0, 0)
    assert not song.has_video
    assert song.has_audio
    cover = items["cover.m4a"]
    # The picture is a video stream to ffprobe: never the programme's video.
    assert (cover.video_index, cover.audio_index, cover.cover_index) == (None, 0, 1)
    assert not cover.has_video
    tracks = items["two-tracks.mkv"]
    assert (tracks.video_index, tracks.audio_index) == (0, 2)  # the default track
    assert not tracks.interlaced
    interlaced = items["interlaced.mkv"]
    assert interlaced.interlaced
    assert interlaced.audio_index is None
    (skipped,) = result.skipped
    assert (Path(skipped.path).name, skipped.reason) == ("subtitles-only.mkv", "no_streams")


VIDEO = {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 640, "height": 360}
AUDIO = {"index": 1, "codec_type": "audio", "codec_name": "aac"}
COVER = {
    "index": 2,
    "codec_type": "video",
    "codec_name": "mjpeg",
    "width": 300,
    "height": 300,
    "disposition": {"attached_pic": 1},
}
NINE = {"duration": "9"}
NEWS = ("p", 30.0, "News", "h264", "aac", 640, 360)


def stream(base: dict[str, object], **changes: object) -> dict[str, object]:
    return {**base, **changes}


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        ({}, Skipped("p", "unreadable", "ffprobe found no streams")),
        (
            {"streams": [], "format": NINE},
            Skipped("p", "no_streams", "no video or audio stream"),
        ),
        (
            {"streams": [COVER, stream(AUDIO, codec_type="subtitle")], "format": NINE},
            Skipped("p", "no_streams", "no video or audio stream"),
        ),
        (
            # A stream without an index cannot be mapped: as if it were not there.
            {"streams": [stream(VIDEO, index=None)], "format": NINE},
            Skipped("p", "no_streams", "no video or audio stream"),
        ),
        (
            {"streams": [VIDEO], "format": {"duration": "0.2"}},
            Skipped("p", "unreadable", "unknown or too short duration (0.2s)"),
        ),
        (
            {"streams": [VIDEO], "format": {"duration": "N/A"}},
            Skipped("p", "unreadable", "unknown or too short duration (0s)"),
        ),
        (
            {"streams": [stream(VIDEO, duration="12.5")], "format": {}},
            MediaItem("p", 12.5, "p", "h264", None, 640, 360, video_index=0),
        ),
        (
            {"streams": [VIDEO, AUDIO], "format": {"duration": "30", "tags": {"title": "News"}}},
            MediaItem(*NEWS, video_index=0, audio_index=1, programme=Programme(title="News")),
        ),
        (
            {"streams": [stream(AUDIO, index=0, duration="7")], "format": {}},
            MediaItem("p", 7.0, "p", "none", "aac", 0, 0, audio_index=0),
        ),
        (
            {"streams": [COVER, AUDIO], "format": NINE},
            MediaItem("p", 9.0, "p", "none", "aac", 0, 0, audio_index=1, cover_index=2),
        ),
        (
            # With real video, an attached picture is only decoration.
            {"streams": [COVER, stream(VIDEO, index=3), AUDIO], "format": NINE},
            MediaItem("p", 9.0, "p", "h264", "aac", 640, 360, video_index=3, audio_index=1),
        ),
        (
            {
                "streams": [
                    VIDEO,
                    stream(AUDIO, codec_name="mp3", disposition={"default": 0}),
                    stream(AUDIO, index=2, codec_name="ac3", disposition={"default": 1}),
                ],
                "format": NINE,
            },
            MediaItem("p", 9.0, "p", "h264", "ac3", 640, 360, video_index=0, audio_index=2),
        ),
        (
            {
                "streams": [
                    VIDEO,
                    stream(AUDIO, codec_name="mp3"),
                    stream(AUDIO, index=2, codec_name="ac3"),
                ],
                "format": NINE,
            },
            MediaItem("p", 9.0, "p", "h264", "mp3", 640, 360, video_index=0, audio_index=1),
        ),
        (
            {"streams": [stream(VIDEO, field_order="tt")], "format": NINE},
            MediaItem("p", 9.0, "p", "h264", None, 640, 360, video_index=0, interlaced=True),
        ),
        (
            {"streams": [stream(VIDEO, field_order="unknown")], "format": NINE},
            MediaItem("p", 9.0, "p", "h264", None, 640, 360, video_index=0),
        ),
    ],
    ids=[
        "no-probe",
        "no-streams",
        "cover-and-subtitles-only",
        "no-index",
        "too-short",
        "no-duration",
        "stream-duration",
        "video-and-audio",
        "audio-only",
        "audio-with-cover",
        "video-with-cover",
        "default-audio-track",
        "first-audio-track",
        "interlaced",
        "unknown-field-order",
    ],
)
def test_item_from_probe(probe: dict[str, object], expected: MediaItem | Skipped) -> None:
    assert item_from_probe("p", probe) == expected


def test_probe_cache_round_trip() -> None:
    cache = ProbeCache(None)
    item = MediaItem(
        "/m/a.mp3", 3.0, "a", "none", "mp3", 0, 0, audio_index=1, cover_index=0, interlaced=True
    )
    skipped = Skipped("/m/b.mp4", "no_streams", "bad")
    cache.put(item.path, 1, 10, item)
    cache.put(skipped.path, 1, 10, skipped)
    assert cache.get(item.path, 1, 10) == item
    assert cache.get(skipped.path, 1, 10) == skipped
    assert cache.get(item.path, 2, 10) is None  # another mtime
    assert cache.get(item.path, 1, 11) is None  # another size
    cache.close()


def test_probe_cache_keeps_the_programme(tmp_path: Path) -> None:
    programme = Programme(show="S", title="T", season=0, episode=1, categories=("A", "B"))
    item = MediaItem("/m/a.mkv", 3.0, "S - S00E01 - T", "h264", None, 2, 2, programme=programme)
    cache = ProbeCache(tmp_path / "probe.sqlite")
    cache.put(item.path, 1, 10, item)
    cache.close()
    reopened = ProbeCache(tmp_path / "probe.sqlite")
    assert reopened.get(item.path, 1, 10) == item
    reopened.close()


def test_results_cached_by_an_older_version_are_probed_again(tmp_path: Path) -> None:
    path = tmp_path / "probe.sqlite"
    old = sqlite3.connect(path)
    # What an older version cached: a MediaItem without the stream indexes.
    result = {"kind": "item", "path": "/m/a.mp4", "duration": 3.0, "title": "a",
              "video_codec": "h264", "audio_codec": "aac", "width": 2, "height": 2}  # fmt: skip
    for version in range(1, CACHE_VERSION):
        table = "probe" if version == 1 else f"probe_v{version}"
        old.execute(f"CREATE TABLE {table} (path TEXT PRIMARY KEY, mtime_ns INTEGER,"
                    " size INTEGER, result TEXT)")  # fmt: skip
        old.execute(f"INSERT INTO {table} VALUES (?, 1, 10, ?)", ("/m/a.mp4", json.dumps(result)))
    old.commit()
    old.close()
    cache = ProbeCache(path)
    assert cache.get("/m/a.mp4", 1, 10) is None
    item = MediaItem("/m/a.mp4", 3.0, "a", "h264", "aac", 2, 2, video_index=0, audio_index=1)
    cache.put(item.path, 1, 10, item)
    cache.close()
    assert ProbeCache(path).get(item.path, 1, 10) == item


# -- a disk or a file that turns hostile: the cache falls back to memory -----------------------

ITEM = MediaItem("/m/a.mp4", 3.0, "a", "h264", "aac", 2, 2, video_index=0, audio_index=1)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    with capturing(lambda record: " ".join(level_and_message(record))) as lines:
        yield lines


def gauge(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("exstream_storage_degraded", {"store": "probe_cache"})
    return value if value is not None else -1.0


@pytest.mark.parametrize("damage", ["damaged header", "random bytes", "truncated"])
def test_a_damaged_cache_file_is_moved_aside_and_created_again(
    tmp_path: Path, damage: str, logged: list[str]
) -> None:
    path = tmp_path / "media-cache.sqlite"
    cache = ProbeCache(path)
    for i in range(300):  # a few pages, so that half of them is a truncated file
        cache.put(f"/m/{i}.mp4", 1, 10, ITEM)
    cache.close()
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    metrics = Metrics(CollectorRegistry())
    cache = ProbeCache(path, probe_cache_health(path, metrics))
    assert cache.get(ITEM.path, 1, 10) is None
    cache.put(ITEM.path, 1, 10, ITEM)
    cache.close()
    assert ProbeCache(path).get(ITEM.path, 1, 10) == ITEM  # on disk again
    (copy,) = tmp_path.glob("media-cache.sqlite.damaged-*")
    assert cache.health.as_json() == {"degraded": False, "moved_aside": [copy.name]}
    damaged = {"store": "probe_cache"}
    assert metrics.registry.get_sample_value("exstream_storage_damaged_total", damaged) == 1
    assert gauge(metrics) == 0
    (warning,) = [w for w in logged if w.startswith("WARNING")]
    assert warning.startswith("WARNING probe cache was damaged (")
    assert warning.endswith(f"moved aside to {copy} and created again")


def test_a_cache_that_cannot_open_works_in_memory_until_the_file_can(
    tmp_path: Path, clock: FakeClock, logged: list[str]
) -> None:
    path = tmp_path / "media-cache.sqlite"
    path.mkdir()  # a directory where the file should be: SQLite cannot open it, even as root
    metrics = Metrics(CollectorRegistry())
    cache = ProbeCache(path, probe_cache_health(path, metrics), reopen_interval=60, clock=clock)
    assert cache.health.fault is not None and cache.health.fault.reason == "unwritable"
    assert gauge(metrics) == 1
    cache.put(ITEM.path, 1, 10, ITEM)
    assert cache.get(ITEM.path, 1, 10) == ITEM  # in memory
    path.rmdir()
    clock.advance(30)
    assert cache.get(ITEM.path, 1, 10) == ITEM  # not yet tried again
    assert not path.exists()
    clock.advance(31)
    assert cache.get(ITEM.path, 1, 10) is None  # the file, empty: probed again once
    cache.put(ITEM.path, 1, 10, ITEM)
    cache.close()
    assert ProbeCache(path).get(ITEM.path, 1, 10) == ITEM
    assert gauge(metrics) == 0
    assert [w.split(":")[0] for w in logged if "probe cache" in w] == [
        "WARNING probe cache degraded (unwritable)",
        "INFO probe cache recovered",
    ]


def test_a_full_disk_moves_the_cache_to_memory(tmp_path: Path, logged: list[str]) -> None:
    limit = {"pages": 0}  # 0: no limit

    def connect(database: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        if limit["pages"]:
            connection.execute(f"PRAGMA max_page_count = {limit['pages']}")
        return connection

    path = tmp_path / "media-cache.sqlite"
    ProbeCache(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        (limit["pages"],) = db.execute("PRAGMA page_count").fetchone()
    cache = ProbeCache(path, connect=connect)  # the file opens; it cannot grow
    assert not cache.health.degraded
    for i in range(100):
        cache.put(f"/m/{i}.mp4", 1, 10, ITEM)
    assert cache.health.fault is not None and cache.health.fault.reason == "disk_full"
    assert cache.get("/m/99.mp4", 1, 10) == ITEM  # kept in memory
    assert sum(1 for w in logged if w.startswith("WARNING probe cache degraded")) == 1
    cache.close()
