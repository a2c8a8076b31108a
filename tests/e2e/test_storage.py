"""The data disk turns hostile (read-only, full, a damaged log store): channels never notice."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.logfile import INSERT, SCHEMA
from tests.damage import DAMAGES
from tests.harness.config import FAST_HEALTH, one_channel
from tests.harness.server import Server, run_server
from tests.harness.standin import StandInFactory
from tests.harness.viewer import Viewer
from tests.polling import wait_for


@functools.cache
def can_mount() -> bool:
    """Whether this test run may mount a tmpfs (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return False
    probe = Path(tempfile.mkdtemp(prefix="exstream-mount-probe-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(probe)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True, timeout=10, check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
        capture_output=True,
        timeout=10,
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """An empty directory nobody can write in. chmod does not stop root: as root it is a
    read-only tmpfs; where root may not mount, the nearest thing, a directory that cannot
    be made (its parent is a file)."""
    if os.geteuid() != 0:
        path.mkdir(mode=0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    elif can_mount():
        with tmpfs(path, "ro", "size=64k") as mounted:
            yield mounted
    else:
        path.write_text("a file where the data directory's parent should be")
        yield path / "data"


def storage(server: Server) -> dict[str, Any]:
    report: dict[str, Any] = server.get("/readyz").json()["storage"]
    return report


def streams_again_after_a_kill(server: Server) -> None:
    """A viewer keeps its connection, and gets bytes again, after ffmpeg is SIGKILLed."""
    viewer = Viewer(server, 1)
    viewer.start()
    try:
        wait_for(lambda: viewer.arrivals, 20, "the viewer's first bytes")
        pid = server.signal_channel(1, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: server.channel(1)["pid"] not in (None, pid), 20, "a new ffmpeg")
        wait_for(lambda: viewer.bytes_since(killed + 0.5) > 50_000, 20, "data again")
        assert viewer.is_alive() and viewer.error is None
        assert viewer.status == 200
    finally:
        viewer.finish()


def test_a_read_only_data_dir_degrades_the_stores_never_the_channels(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    with read_only_directory(tmp_path / "read-only") as data_dir:
        # Where it can be, the working directory and TMPDIR are read-only too: neither the
        # service nor a spawned ffmpeg may need to write anything anywhere.
        cwd = data_dir if data_dir.is_dir() else None
        config = one_channel(
            tmp_path,
            clips(2, 30.0),
            server={"data_dir": str(data_dir)},
            health={**FAST_HEALTH, "stall_timeout": 5.0},
        )
        env = {"TMPDIR": str(data_dir)} if cwd is not None else {}
        with run_server(config, env=env, cwd=cwd) as server:
            report = storage(server)
            for store in ("logs", "probe_cache"):
                assert report[store]["degraded"], report
                assert report[store]["reason"] == "unwritable", report
                assert server.metric("exstream_storage_degraded", store=store) == 1
            streams_again_after_a_kill(server)
            assert server.channel(1)["restarts"] >= 1
            answer = server.get("/api/logs/entries?level=ERROR")
            assert answer.status_code == 503
            assert answer.json()["error"] == "log_store_unavailable"
            assert server.metric("exstream_logs_dropped_total", reason="unavailable") > 0
        if cwd is not None:
            assert list(data_dir.iterdir()) == []
    log = server.log()
    assert "Traceback" not in log
    assert log.count("log store degraded (unwritable)") == 1
    assert log.count("probe cache degraded (unwritable)") == 1


def test_a_full_disk_degrades_the_stores_and_the_log_store_comes_back(
    tmp_path: Path, stand_in: StandInFactory
) -> None:
    if not can_mount():
        pytest.skip("needs a small tmpfs (root that may mount); test_logstore fills a file")
    with tmpfs(tmp_path / "small", "size=256k") as data_dir:
        filler = data_dir / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(bytes(4096))
                out.flush()
        config, env, _ = stand_in(server={"data_dir": str(data_dir)})
        with run_server(config, env=env) as server:
            report = storage(server)
            assert report["logs"]["reason"] == "disk_full", report
            assert report["probe_cache"]["reason"] == "disk_full", report
            viewer = Viewer(server, 1)
            viewer.start()
            wait_for(lambda: len(viewer.data) > 100_000, 20, "the channel's stream")
            viewer.finish()
            assert server.get("/api/logs/entries").status_code == 503
            filler.unlink()
            # The log store tries its file again every 10 s.
            wait_for(lambda: not storage(server)["logs"]["degraded"], 30, "the log store back")
            assert server.metric("exstream_storage_degraded", store="logs") == 0
            wait_for(
                lambda: server.get("/api/logs/entries?q=log+store+recovered").json()["entries"],
                10,
                "the recovery stored in the store itself",
            )
    log = server.log()
    assert "Traceback" not in log
    assert log.count("log store degraded (disk_full)") == 1
    assert log.count("log store recovered") == 1


def write_log_store(path: Path, entries: int = 5000) -> None:
    """A log store file as the service writes it, with `entries` entries (every 7th ERROR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA)
        rows = [
            (1_700_000_000_000_000 + i, 40, "ERROR", f"old {i}", "t", "1", None, None, "{}")
            if i % 7 == 0
            else (1_700_000_000_000_000 + i, 20, "INFO", f"old {i}", "t", "1", None, None, "{}")
            for i in range(entries)
        ]
        db.execute("BEGIN")
        db.executemany(INSERT, rows)
        db.execute("COMMIT")


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_log_store_is_moved_aside_and_the_service_starts(
    tmp_path: Path, stand_in: StandInFactory, damage: str
) -> None:
    path = tmp_path / "data" / "logs.sqlite"
    write_log_store(path)
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    evidence = path.read_bytes()
    config, env, _ = stand_in()
    with run_server(config, env=env) as server:
        # Damage in the middle is found by the writer's first check, just after start.
        moved = wait_for(lambda: storage(server)["logs"].get("moved_aside"), 20, "moved aside")
        assert not storage(server)["logs"]["degraded"]
        (name,) = moved  # names only: /readyz is open to anyone
        assert name.startswith("logs.sqlite.damaged-")
        copy = path.parent / name
        assert copy.read_bytes() == evidence
        assert server.metric("exstream_storage_damaged_total", store="logs") == 1
        viewer = Viewer(server, 1)
        viewer.start()
        wait_for(lambda: len(viewer.data) > 100_000, 20, "the channel's stream")
        viewer.finish()
        for query in ("", "?level=ERROR"):
            answer = server.get(f"/api/logs/entries{query}")
            assert answer.status_code == 200, answer.text
            assert not any(e["message"].startswith("old ") for e in answer.json()["entries"])
        wait_for(
            lambda: server.get("/api/logs/entries?level=WARNING&q=was+damaged").json()["entries"],
            10,
            "the damage reported in the new store",
        )
    assert "Traceback" not in server.log()
