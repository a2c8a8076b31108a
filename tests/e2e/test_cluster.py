"""End to end: two exstream instances sharing one channels.toml, each running its share of
the channels, behind the real nginx front door of deploy/nginx/frontdoor.conf."""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from service.cluster import rendezvous
from tests.harness import nginx, processes
from tests.harness.hlsplayer import edge_in_front
from tests.harness.network import free_port
from tests.harness.server import Server, serve_argv
from tests.harness.standin import StandInFactory
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
FRONT_DOOR = ROOT / "deploy" / "nginx" / "frontdoor.conf"
NAMES = ("exstream-0", "exstream-1")
ALWAYS_ON = (1, 2, 3, 4, 5)
ON_DEMAND = 6
TS_SYNC = 0x47


def owner(channel: int, live: tuple[str, ...] = NAMES) -> str:
    return rendezvous(channel, live)[0]


@dataclass
class Instance:
    name: str
    server: Server
    spawns: Path

    def spawned_channels(self) -> set[int]:
        if not self.spawns.exists():
            return set()
        lines = self.spawns.read_text(encoding="utf-8").splitlines()
        return {int(line.split()[0]) for line in lines if line and line[0].isdigit()}

    def children(self) -> set[int]:
        """The channels whose processes run under this instance now."""
        found = set()
        for child in self.server.children("exstream_channel="):
            with contextlib.suppress(psutil.Error):
                for part in child.cmdline():
                    if "exstream_channel=" in part:
                        found.add(int(part.split("exstream_channel=")[1].split(":")[0]))
        return found

    def cluster(self) -> dict[str, bool]:
        members = self.server.get("/api/cluster").json()["members"]
        return {m["name"]: m["live"] for m in members}

    def running(self) -> set[int]:
        channels = self.server.get("/api/channels").json()["channels"]
        return {c["number"] for c in channels if c["state"] in ("running", "slate")}


def front_door_config(directory: Path, port: int, upstreams: list[int]) -> Path:
    """deploy/nginx/frontdoor.conf with loopback addresses."""
    text = FRONT_DOOR.read_text(encoding="utf-8")
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in upstreams)
    text, found = re.subn(r"(upstream exstream_any \{\n)    server [^\n]+\n", rf"\1{servers}", text)
    assert found == 1
    text, found = re.subn(r"resolver [^;]+;", "resolver 127.0.0.1 valid=5s;", text)
    assert found == 1
    text, found = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", text)
    assert found == 1
    site = directory / "frontdoor.conf"
    site.write_text(text, encoding="utf-8")
    return site


def start_instance(
    stack: contextlib.ExitStack, config: Path, name: str, port: int, env: dict[str, str]
) -> Instance:
    """An instance started, not yet ready (both start at once, as a StatefulSet's pods
    may: one that waits for the other would take over its channels meanwhile)."""
    directory = config.parent / name
    directory.mkdir()
    spawns = directory / "spawns.log"
    overrides = {
        "EXSTREAM_INSTANCE": name,
        "EXSTREAM_PORT": str(port),
        "EXSTREAM_DATA_DIR": str(directory / "data"),
        "EXSTREAM_LOG_LEVEL": "DEBUG",
        "FAKE_FFMPEG_LOG": str(spawns),
    }
    log = directory / "server.log"
    environment = processes.clean_environment(**{**env, **overrides})
    process = processes.start(serve_argv(config), log, env=environment)
    stack.callback(processes.stop, process)
    return Instance(name, Server(process, f"http://127.0.0.1:{port}", log), spawns)


def first_bytes(url: str, size: int = 188 * 10) -> bytes:
    """The start of a stream, read as a player reads it (redirects not followed)."""
    data = b""
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.status_code == 200, (response.status_code, response.read())
        for chunk in response.iter_raw():
            data += chunk
            if len(data) >= size:
                break
    return data


def runs(member: Instance, channels: set[int]) -> bool:
    return member.running() == channels


def plays(url: str) -> bool:
    try:
        return first_bytes(url)[0] == TS_SYNC
    except (httpx.HTTPError, AssertionError):
        return False


@pytest.fixture
def cluster(tmp_path: Path, stand_in: StandInFactory) -> Iterator[tuple[str, list[Instance]]]:
    ports = [free_port(), free_port()]
    door_port = free_port()
    front = f"http://127.0.0.1:{door_port}"
    channels = [{"number": n, "name": f"Ch {n}", "mode": "always_on"} for n in ALWAYS_ON]
    channels.append({"number": ON_DEMAND, "name": "On demand", "idle_grace": 1.0})
    setup = stand_in(
        channels,
        # The front door connects from 127.0.0.1; clients below also come from 127.0.0.2.
        server={"public_url": front, "trusted_proxies": ["127.0.0.1"]},
        cluster={
            "members": list(NAMES),
            "peers": [f"http://127.0.0.1:{p}" for p in ports],
            "check_interval": 0.3,
            "check_timeout": 0.5,
            "down_after": 2,
        },
    )
    door = tmp_path / "nginx"
    door.mkdir()
    site = front_door_config(door, door_port, ports)
    with contextlib.ExitStack() as stack:
        members = [
            start_instance(stack, setup.config, name, port, setup.env)
            for name, port in zip(NAMES, ports, strict=True)
        ]
        for member in members:
            server = member.server
            processes.wait_ready(server.process, f"{server.base_url}/readyz", server.log_path, 60)
        stack.enter_context(nginx.running(door, site, ready_url=f"{front}/healthz"))
        yield front, members


def test_each_instance_runs_its_share_and_every_channel_plays_through_the_front_door(
    cluster: tuple[str, list[Instance]],
) -> None:
    front, members = cluster
    share = {m.name: {n for n in ALWAYS_ON if owner(n) == m.name} for m in members}
    assert all(share.values()), share  # both instances have channels to run
    for member in members:
        wait_for(functools.partial(runs, member, share[member.name]), 30, f"{member.name}'s share")
    for number in (*ALWAYS_ON, ON_DEMAND):
        assert first_bytes(f"{front}/stream/{number}.ts")[0] == TS_SYNC, number
        head = httpx.head(f"{front}/stream/{number}.ts", timeout=10)
        assert head.status_code == 200 and head.headers["content-type"] == "video/mp2t"
    for member in members:
        # Its processes are its share's (and the on-demand channel's, started where it belongs).
        assert member.children() - {ON_DEMAND} == share[member.name], member.name
        ran_on_demand = ON_DEMAND in member.spawned_channels()
        assert ran_on_demand == (owner(ON_DEMAND) == member.name), member.name
        listed = member.server.get("/api/channels").json()["channels"]
        assert {c["number"]: c["instance"] for c in listed} == {
            n: owner(n) for n in (*ALWAYS_ON, ON_DEMAND)
        }
        metrics = member.server
        assert metrics.metric("exstream_instance_info", member=member.name) == 1
        for number in ALWAYS_ON:
            owned = metrics.metric("exstream_channel_owned", channel=str(number))
            assert owned == (owner(number) == member.name), (member.name, number)


def test_playlists_guide_and_lineup_of_either_instance_name_every_channel_at_the_front_door(
    cluster: tuple[str, list[Instance]],
) -> None:
    front, members = cluster
    numbers = {*ALWAYS_ON, ON_DEMAND}
    playlists = [m.server.get("/iptv/channels.m3u").text for m in members]
    assert playlists[0] == playlists[1]
    urls = [line for line in playlists[0].splitlines() if line and not line.startswith("#")]
    assert sorted(urls) == sorted(f"{front}/stream/{n}.ts" for n in numbers)
    guides = [ET.fromstring(m.server.get("/iptv/xmltv.xml").content) for m in members]
    ids = [sorted(c.get("id") or "" for c in g.iter("channel")) for g in guides]
    assert ids[0] == ids[1] and len(ids[0]) == len(numbers)
    for member in members:
        lineup = member.server.get("/lineup.json").json()
        assert sorted(e["URL"] for e in lineup) == sorted(urls)
    # Through the front door too, whichever instance answers.
    assert httpx.get(f"{front}/iptv/channels.m3u", timeout=10).text == playlists[0]


def test_an_instance_asked_directly_for_another_ones_channel_redirects_to_it(
    cluster: tuple[str, list[Instance]], tmp_path: Path
) -> None:
    _, members = cluster
    by_name = {m.name: m for m in members}
    number = next(n for n in ALWAYS_ON if owner(n) == "exstream-1")
    wait_for(lambda: number in by_name["exstream-1"].running(), 30, "the owner running")
    asked = by_name["exstream-0"].server
    response = httpx.get(f"{asked.base_url}/stream/{number}.ts?x=1", timeout=10)
    assert response.status_code == 302
    assert (
        response.headers["location"]
        == f"{by_name['exstream-1'].server.base_url}/stream/{number}.ts?x=1"
    )
    assert response.json()["error"] == "channel_elsewhere"
    # A client cannot pass for the front door: its owner header is ignored.
    forged = {"X-Exstream-Owner": "exstream-0"}
    url = f"{asked.base_url}/stream/{number}.ts"
    with (
        httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client,
        client.stream("GET", url, headers=forged, timeout=10) as response,
    ):
        assert response.status_code == 302, response.status_code
    # Nor through an edge cache in front of the instance (a proxy it trusts).
    with (
        edge_in_front(asked, tmp_path / "edge") as (edge, _),
        httpx.stream("GET", f"{edge}/stream/{number}.ts", headers=forged, timeout=10) as response,
    ):
        assert response.status_code == 302, response.status_code
    with (
        httpx.Client(follow_redirects=True, timeout=10) as client,  # as players do
        client.stream("GET", f"{asked.base_url}/stream/{number}.ts") as stream,
    ):
        assert stream.status_code == 200
        assert next(stream.iter_raw())[0] == TS_SYNC
    assert number not in by_name["exstream-0"].children()


def test_a_killed_instances_channels_move_to_the_other_and_play_through_the_front_door(
    cluster: tuple[str, list[Instance]],
) -> None:
    front, members = cluster
    survivor, victim = members
    moved = {n for n in ALWAYS_ON if owner(n) == victim.name}
    wait_for(lambda: victim.running() == moved, 30, "the victim running its share")
    children = processes.descendants(victim.server.pid)
    victim.server.process.send_signal(signal.SIGKILL)
    victim.server.process.wait(10)
    try:
        wait_for(lambda: not survivor.cluster()[victim.name], 10, "the victim seen down")
        wait_for(lambda: survivor.running() == set(ALWAYS_ON), 15, "every channel running")
        for number in sorted(moved):
            wait_for(
                functools.partial(plays, f"{front}/stream/{number}.ts"), 15, f"channel {number}"
            )
        assert moved <= survivor.spawned_channels()
        assert survivor.server.metric("exstream_cluster_peer_up", peer=victim.name) == 0
        assert "peer exstream-1 is down" in survivor.server.log()
    finally:
        for child in children:  # the victim's own processes, left without their parent
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_hls_where_a_channel_ran_meanwhile_stops_when_it_moves_back(
    cluster: tuple[str, list[Instance]],
) -> None:
    _, (first, second) = cluster
    number = next(n for n in ALWAYS_ON if owner(n) == first.name)
    wait_for(lambda: number in first.running(), 30, "the owner running")
    first.server.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: number in second.running(), 15, "the channel taken over")
        # A player of the channel's HLS on the instance that runs it meanwhile.
        playlist = httpx.get(f"{second.server.base_url}/stream/{number}.m3u8", timeout=30)
        assert playlist.status_code == 200, playlist.text
    finally:
        first.server.process.send_signal(signal.SIGCONT)
    wait_for(lambda: second.cluster()[first.name], 15, "the owner seen up again")
    # The channel went back; once the player's session there has ended, nothing runs it
    # there (its HLS did not start it again when its viewers were sent away).
    wait_for(
        lambda: second.server.metric("exstream_hls_viewers", channel=str(number)) == 0,
        30,
        "the session's end",
    )
    assert number not in second.running() and number not in second.children()
    assert "runs on another instance now: no HLS here" in second.server.log()
    wait_for(lambda: number in first.running(), 30, "the owner running it again")
