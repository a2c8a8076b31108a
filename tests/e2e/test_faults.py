"""Fault injection: real processes (ffmpeg and stand-ins) against a real server."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.demo import make_clip
from service.mpegts import PACKET_SIZE, packets, payload_unit_start, pid
from tests.e2e.wire import worst_gap
from tests.harness import processes
from tests.harness.config import FAST_HEALTH, one_channel, port_of, write_config
from tests.harness.processes import alive
from tests.harness.server import Server, run_server, serve_argv
from tests.harness.standin import FAKE_FFMPEG_STORM, StandInFactory, spawns
from tests.harness.viewer import Viewer
from tests.polling import wait_for


def more_spawns(log: Path, channel: str, than: int) -> bool:
    return len(spawns(log, channel)) > than


def test_killed_ffmpeg_is_restarted_and_viewers_keep_their_connection(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    # Long items: the process lives on while the work-ahead holds its output.
    with run_server(
        one_channel(tmp_path, clips(2, 30.0), health={**FAST_HEALTH, "stall_timeout": 5.0})
    ) as server:
        viewer = Viewer(server, 1)
        viewer.start()
        wait_for(lambda: viewer.arrivals, 10, "the viewer's first bytes")
        pid = server.signal_channel(1, signal.SIGKILL)
        killed = time.monotonic()
        new_pid = wait_for(
            lambda: (p := server.channel(1)["pid"]) and p != pid and p, 20, "a new ffmpeg"
        )
        assert new_pid != pid
        wait_for(lambda: viewer.bytes_since(killed + 0.5) > 50_000, 20, "data again")
        assert viewer.is_alive() and viewer.error is None  # the same connection
        channel = server.channel(1)
        assert channel["restarts"] == 1 and channel["state"] == "running"
        # Healed, so no `failure`; the crash is still told, for the status page.
        assert channel["failure"] is None
        crash = channel["last_crash"]
        assert crash["reason"] == "exited" and "signal 9" in crash["detail"], crash
        assert server.metric("exstream_channel_unhealthy_total", channel="1", reason="exited") == 1
        assert server.metric("exstream_ffmpeg_exits_total", channel="1", code_class="signal") == 1
        viewer.stop.set()


def test_stopped_process_is_detected_as_a_stall_killed_and_restarted(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    with run_server(one_channel(tmp_path, clips(2, 30.0), health=FAST_HEALTH)) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "output")
        viewer = Viewer(server, 1)
        viewer.start()
        wait_for(lambda: viewer.arrivals, 10, "the viewer's first bytes")
        pid = server.signal_channel(1, signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(
            lambda: server.metric("exstream_channel_unhealthy_total", reason="stalled") == 1,
            30,
            "the stall to be seen",
        )
        # The process owes frames only once what it wrote before (pipe, work-ahead) is
        # used up; the viewer is served from that meanwhile and never waits.
        detected = time.monotonic()
        print(f"stall detected after {detected - stopped:.2f}s")
        wait_for(lambda: viewer.bytes_since(detected + 1.0) > 0, 10, "data after the restart")
        assert worst_gap(viewer.arrivals) < 0.5, worst_gap(viewer.arrivals)
        viewer.stop.set()
        wait_for(lambda: not alive(pid), 10, "the old group killed")
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "running again")
        assert server.channel(1)["pid"] != pid
        assert "stalled" in server.log()


def clean_cut(data: bytes, near: int) -> int:
    """An offset at or before `near` where every PES before it is whole: a video frame
    starts there and no audio PES spans it."""
    starts = [(pid(p), payload_unit_start(p)) for p in packets(data)]
    video, audio = 0x100, 0x101  # ffmpeg's PIDs
    for index in range(min(near // PACKET_SIZE, len(starts) - 1), 0, -1):
        if starts[index] != (video, True):
            continue
        following = next((start for p, start in starts[index:] if p == audio), True)
        if following:
            return index * PACKET_SIZE
    raise AssertionError("no clean cut point")


def test_corrupt_missing_and_truncated_media_are_skipped_without_restarts(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    good, gone, cut = (library / "a.mp4", library / "b.mp4", library / "c.ts")
    source = clips(3, 2.0)
    good.write_bytes(source[0].read_bytes())
    gone.write_bytes(source[1].read_bytes())
    (library / "corrupt.mp4").write_bytes(os.urandom(50_000))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(make_clip(tmp_path / "c.mp4", 6.0,
         size="320x240")), "-c", "copy", "-f", "mpegts", str(cut)],
        check=True, timeout=60,
    )  # fmt: skip
    config = write_config(
        tmp_path,
        [{"number": 1, "name": "A", "media": [str(library)]}],
        health=FAST_HEALTH,
    )
    with run_server(config) as server:
        channel = server.channel(1)
        assert channel["media_items"] == 3
        assert [s["reason"] for s in channel["skipped_media"]] == ["unreadable"]
        # After the scan: one file disappears, one loses its second half (cut between
        # whole frames, so ffmpeg sees an early end, not a broken last frame).
        gone.unlink()
        with cut.open("r+b") as file:
            file.truncate(clean_cut(cut.read_bytes(), cut.stat().st_size // 2))
        viewer = Viewer(server, 1)
        viewer.start()
        # One whole cycle of the schedule (2 + 2 + 6 s) and a little more.
        wait_for(
            lambda: (
                len(viewer.arrivals) > 1 and viewer.arrivals[-1][0] - viewer.arrivals[0][0] > 11
            ),
            40,
            "a whole cycle of the schedule",
        )
        viewer.stop.set()
        viewer.join(10)
        assert viewer.error is None
        assert worst_gap(viewer.arrivals) < 0.5
        skipped = server.channel(1)["skipped_items"]
        assert [(s["path"], s["reason"]) for s in skipped] == [(str(cut), "ended_early")]
        assert server.metric("exstream_items_skipped_total", channel="1", reason="ended_early") >= 1
        assert (
            server.metric("exstream_channel_filler_seconds_total", channel="1", reason="skipped")
            > 0
        )
        assert server.channel(1)["restarts"] == 0
        assert server.metric("exstream_channel_unhealthy_total", channel="1") == 0
        assert "corrupt.mp4" in server.log()
        assert "ended_early" in server.log()


def test_channel_whose_process_always_exits_fails_after_exactly_max_restarts(
    stand_in: StandInFactory,
) -> None:
    config, env, log = stand_in(
        [{"number": 4, "name": "Broken", "mode": "always_on"}],
        {"4": "crash"},
        health={**FAST_HEALTH, "max_restarts": 3},
    )
    with run_server(config, env) as server:
        wait_for(lambda: server.channel(4)["state"] == "failed", 30, "state failed")
        assert len(spawns(log, "4")) == 1 + 3
        assert server.metric("exstream_channel_restarts_total", channel="4", outcome="started") == 3
        assert server.metric("exstream_channel_restarts_total", channel="4", outcome="refused") == 1
        assert server.metric("exstream_restart_budget_exhausted_total", channel="4") == 1
        assert "budget spent" in server.channel(4)["failure"]
        # It stays failed: no further spawn over several health checks.
        checks = server.metric("exstream_event_loop_lag_seconds_count")
        wait_for(
            lambda: server.metric("exstream_event_loop_lag_seconds_count") > checks + 6,
            10,
            "a few loop-lag probes (0.5 s each)",
        )
        assert len(spawns(log, "4")) == 4
        response = server.get("/stream/4.ts")
        assert response.status_code == 503
        assert response.json()["error"] == "channel_unavailable"
        # An operator reset tries again.
        with server.client() as client:
            reset = client.post("/api/channels/4/restart")
        assert reset.status_code == 202 and reset.json()["action"] == "reset"
        wait_for(lambda: len(spawns(log, "4")) > 4, 10, "a spawn after the reset")


def restart_attempts(server: Server, channel: int) -> int:
    """The restart attempts the server logged for `channel`."""
    return len(re.findall(rf"restart attempt [0-9]+ of channel {channel}\b", server.log()))


def test_failed_on_demand_channel_ends_its_viewers_and_stays_failed_when_idle(
    stand_in: StandInFactory,
) -> None:
    config, env, log = stand_in(
        [{"number": 9, "name": "Flaky", "idle_grace": 0.5}],
        {"9": "crash"},
        health={**FAST_HEALTH, "max_restarts": 2},
    )
    with run_server(config, env) as server:
        viewer = Viewer(server, 9)
        viewer.start()
        # The stream ends when the channel fails, instead of waiting for bytes for ever.
        viewer.join(30)
        assert not viewer.is_alive() and viewer.error is None
        assert viewer.arrivals
        assert server.channel(9)["state"] == "failed"
        # The server's own count of processes (a stand-in starved of CPU may be killed
        # before it writes its spawn line): the first, then max_restarts attempts.
        attempts = functools.partial(restart_attempts, server, 9)
        assert attempts() == 2
        assert len(spawns(log, "9")) <= 1 + 2
        # Idle now, past its idle grace: still failed, no new process, viewers refused.
        probes = server.metric("exstream_event_loop_lag_seconds_count")
        wait_for(
            lambda: server.metric("exstream_event_loop_lag_seconds_count") > probes + 6,
            10,
            "a few loop-lag probes (0.5 s each)",
        )
        assert server.channel(9)["state"] == "failed"
        assert server.get("/stream/9.ts").status_code == 503
        assert attempts() == 2


def test_garbage_output_is_a_stall(stand_in: StandInFactory) -> None:
    config, env, _ = stand_in(
        [{"number": 5, "name": "Noise", "mode": "always_on"}],
        {"5": "garbage,ok"},
        health=FAST_HEALTH,
    )
    with run_server(config, env) as server:
        wait_for(
            lambda: (
                server.metric("exstream_channel_unhealthy_total", channel="5", reason="stalled")
                == 1
            ),
            30,
            "garbage to be seen as a stall",
        )
        wait_for(lambda: server.channel(5)["state"] == "running", 30, "running on good output")
        assert server.metric("exstream_channel_output_bytes_total", channel="5") > 0


def test_operator_restart_of_a_running_channel_is_outside_the_budget(
    stand_in: StandInFactory,
) -> None:
    config, env, log = stand_in(
        [
            {"number": 6, "name": "Fine", "mode": "always_on"},
            {"number": 7, "name": "Idle"},
        ],
        {},
        health={**FAST_HEALTH, "max_restarts": 1},
    )
    with run_server(config, env) as server:

        def running() -> dict[str, Any] | None:
            status = server.channel(6)
            return status if status["state"] == "running" and status["process"] else None

        before = wait_for(running, 30, "running, with a process")
        with server.client() as client:
            for round_ in range(1, 4):
                response = client.post("/api/channels/6/restart")
                assert response.status_code == 202
                assert response.json() == {"number": 6, "action": "restarted"}
                wait_for(functools.partial(more_spawns, log, "6", round_), 10, "a new process")
            idle = client.post("/api/channels/7/restart")
            assert idle.status_code == 409 and idle.json()["error"] == "channel_not_running"
            assert client.post("/api/channels/99/restart").status_code == 404

        def replaced() -> dict[str, Any] | None:
            status = server.channel(6)
            process = status["process"]
            return status if process and process["pid"] != before["process"]["pid"] else None

        after = wait_for(replaced, 10, "a new process in the channel's status")
        assert after["state"] == "running" and after["restarts"] == 0
        # The stream went on (its uptime did not start again); the process is new.
        assert after["uptime_seconds"] > before["uptime_seconds"]
        assert after["process"]["uptime_seconds"] < after["uptime_seconds"]
        assert after["pid"] == after["process"]["pid"]


def test_viewer_arriving_while_an_idle_channel_stops_gets_a_fresh_start(
    stand_in: StandInFactory,
) -> None:
    config, env, log = stand_in(
        [{"number": 8, "name": "Idle", "idle_grace": 0.5}],
        {"8": "slowterm"},
        health=FAST_HEALTH,
    )
    with run_server(config, env) as server:
        with server.client() as client, client.stream("GET", "/stream/8.ts") as response:
            next(response.iter_raw())
        # The stand-in takes a second to exit: a viewer now arrives during the stop.
        wait_for(lambda: "idle for 0.5s: stopping" in server.log(), 10, "the idle stop", 0.01)
        received = 0
        with server.client() as client, client.stream("GET", "/stream/8.ts") as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > 100_000:
                    break
        assert received > 100_000
        assert len(spawns(log, "8")) == 2


def test_restart_storm_converges_within_the_spawn_rate(stand_in: StandInFactory) -> None:
    channels = [
        {"number": number, "name": f"Storm {number}", "mode": "always_on"}
        for number in range(1, 201)
    ]
    rate, burst = 40.0, 10
    config, env, log = stand_in(
        channels,
        {},
        ffmpeg={"ffmpeg": str(FAKE_FFMPEG_STORM)},
        health={**FAST_HEALTH, "stall_timeout": 120.0, "max_restarts": 3, "max_in_flight": 16},
        pool={"max_processes": 250, "spawn_rate": rate, "spawn_burst": burst},
        playout={"min_horizon": 60},
    )

    def states() -> dict[int, dict[str, Any]]:
        return {c["number"]: c for c in server.get("/api/channels").json()["channels"]}

    # A small recording (4 s at 64x48): 200 channels play it over and over.
    tiny = log.parent / "tiny.ts"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i",
         "testsrc2=size=64x48:rate=25:duration=4", "-f", "lavfi", "-i",
         "sine=duration=4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
         "-c:a", "aac", "-b:a", "32k", "-f", "mpegts", str(tiny)],
        check=True, timeout=60,
    )  # fmt: skip
    env = {**env, "FAKE_FFMPEG_SOURCE": str(tiny)}
    with run_server(config, env) as server:
        wait_for(
            lambda: all(c["state"] == "running" and c["pid"] for c in states().values()),
            60,
            "all running",
        )
        pids = [c["pid"] for c in states().values()]
        before = len(spawns(log))
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)
        # Viewers would see nothing of it (the work-ahead covers the restart): wait for a
        # new process of every channel.
        wait_for(
            lambda: all(
                c["state"] == "failed" or (c["pid"] is not None and c["pid"] not in pids)
                for c in states().values()
            ),
            90,
            "every channel running a new process, or failed",
        )
        final = states()
        times = sorted(spawns(log)[before:])
        assert len(times) >= 200
        worst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        print(f"storm: {len(times)} spawns in {times[-1] - times[0]:.1f}s, worst second {worst}")
        assert worst <= rate + burst
        assert sum(c["state"] == "running" for c in final.values()) == 200
        descendants = server.children()
        assert "RecursionError" not in server.log()
    left = [p for p in descendants if alive(p.pid)]
    assert left == []


def test_readyz_names_the_key_of_a_broken_ffmpeg(tmp_path: Path) -> None:
    config = write_config(tmp_path, [], ffmpeg={"preset": "ludicrous"})
    base = f"http://127.0.0.1:{port_of(config)}"
    with processes.running(
        serve_argv(config),
        tmp_path / "server.log",
        ready_url=f"{base}/healthz",  # it answers, but is not ready
        env=processes.clean_environment(),
    ):
        answer = httpx.get(f"{base}/readyz", timeout=10)
    assert answer.status_code == 503
    body = answer.json()
    assert body["checks"]["ffmpeg"] is False
    (problem,) = body["problems"]
    assert problem.startswith("ffmpeg.preset: libx264 has no preset 'ludicrous'"), problem
    assert "ffmpeg.preset: libx264 has no preset" in (tmp_path / "server.log").read_text()


def test_idle_stop_after_restarts_is_no_failure_and_ends_every_span_once(
    stand_in: StandInFactory,
) -> None:
    config, env, log = stand_in(
        [{"number": 5, "name": "Idle", "idle_grace": 0.5}],
        {"5": "crash,ok"},  # one crash, restarted through the policy, then content
        health=FAST_HEALTH,
    )
    with run_server(config, env) as server:
        viewer = Viewer(server, 5)
        viewer.start()
        wait_for(lambda: len(spawns(log, "5")) >= 2, 30, "the restart's spawn")
        wait_for(lambda: server.channel(5)["pid"] is not None, 10, "the restarted process")
        with server.client() as client:  # and an operator restart
            assert client.post("/api/channels/5/restart").status_code == 202
        wait_for(lambda: len(spawns(log, "5")) >= 3, 10, "the operator restart's spawn")
        viewer.stop.set()
        viewer.join(10)
        wait_for(lambda: server.channel(5)["state"] == "stopped", 20, "the idle stop")
        assert server.metric("exstream_channel_restarts_total", channel="5", outcome="started") == 1
        assert server.metric("exstream_channel_restarts_total", channel="5", outcome="failed") == 0
        assert "ended span" not in server.log()  # OpenTelemetry's "Calling end() on an ended span"
        assert "process replaced on request" in server.log()
