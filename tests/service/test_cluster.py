from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.cluster import (
    Membership,
    PeerMonitor,
    channel_of_path,
    probe_ready,
    rendezvous,
    xmltv_instance,
)
from service.config import ClusterSettings, Settings, parse_settings
from service.errors import ConfigError
from telemetry.metrics import Metrics
from tests.harness.network import free_port

NAMES = ("exstream-0", "exstream-1", "exstream-2")
PEERS = tuple(f"http://{n}.exstream:8410" for n in NAMES)
CHANNELS = range(1, 101)


def cluster(instance: str = "exstream-0", **more: Any) -> Settings:
    section = {"instance": instance, "instances": 3, "peer_url": "http://{member}.exstream:8410"}
    data = {"cluster": {**section, **more}}
    return parse_settings(data, Path("/srv/channels.toml"), {})


def membership(settings: ClusterSettings) -> tuple[Membership, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return Membership(settings, CHANNELS, metrics), metrics


def test_instances_make_the_members_and_their_urls_from_the_pod_name() -> None:
    settings = cluster("exstream-1").cluster
    assert settings.members == NAMES
    assert settings.peers == PEERS
    assert settings.instance == "exstream-1"


def test_the_environment_names_the_instance() -> None:
    data = {"cluster": {"members": ["a", "b"], "peers": ["http://h:1", "http://h:2"]}}
    settings = parse_settings(data, Path("/srv/c.toml"), {"EXSTREAM_INSTANCE": "b"})
    assert (settings.cluster.instance, settings.cluster.peers) == (
        "b",
        ("http://h:1", "http://h:2"),
    )


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"instance": "exstream-3"}, "cluster.instance: 'exstream-3' must end in -<ordinal>"),
        ({"instance": "web"}, "cluster.instance: 'web' must end in -<ordinal>"),
        ({"peer_url": "ftp://x"}, "cluster.peer_url: must be an http:// URL"),
        ({"peer_url": "", "peers": ["http://a:1"]}, "cluster.peers: expected one URL per member"),
        ({"members": ["a"]}, "cluster.members: give cluster.instances or cluster.members"),
        ({"down_after": 0}, "cluster.down_after: must be at least 1"),
    ],
)
def test_cluster_problems_name_their_key(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        cluster(**section)
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_without_a_cluster_one_instance_runs_every_channel() -> None:
    settings = parse_settings({}, Path("/srv/c.toml"), {"EXSTREAM_INSTANCE": "solo"})
    members, metrics = membership(settings.cluster)
    assert members.owned() == set(CHANNELS)
    assert metrics.registry.get_sample_value("exstream_instance_info", {"member": "solo"}) == 1


def test_every_instance_agrees_and_the_channels_are_shared_out() -> None:
    views = [membership(cluster(name).cluster)[0] for name in NAMES]
    owned = [view.owned() for view in views]
    assert set().union(*owned) == set(CHANNELS)
    assert sum(len(o) for o in owned) == len(CHANNELS)
    assert all(20 <= len(o) <= 46 for o in owned), [len(o) for o in owned]


def test_a_dead_member_moves_only_its_own_channels() -> None:
    view, metrics = membership(cluster("exstream-0").cluster)
    before = {c: view.owner(c).name for c in CHANNELS}
    gained, lost = view.mark("exstream-2", False)
    after = {c: view.owner(c).name for c in CHANNELS}
    moved = {c for c in CHANNELS if before[c] != after[c]}
    assert moved == {c for c in CHANNELS if before[c] == "exstream-2"}
    assert gained == {c for c in moved if after[c] == "exstream-0"} and not lost
    assert all(rendezvous(c, ["exstream-0", "exstream-1"])[0] == after[c] for c in CHANNELS)
    sample = metrics.registry.get_sample_value
    assert sample("exstream_cluster_peer_up", {"peer": "exstream-2"}) == 0
    assert all(sample("exstream_channel_owned", {"channel": str(c)}) == 1 for c in gained)


async def test_a_peer_is_down_after_failed_checks_in_a_row_and_up_at_a_good_one() -> None:
    view, _ = membership(cluster("exstream-0", down_after=2).cluster)
    answers: dict[str, str | None] = {url: None for url in PEERS}
    changes: list[set[int]] = []

    async def probe(url: str, timeout: float) -> str | None:
        return answers[url]

    async def changed() -> None:
        changes.append(view.owned())

    monitor = PeerMonitor(view, view_settings(view), changed, probe=probe)
    answers[PEERS[1]] = "connection refused"
    await monitor.check()
    assert view.live["exstream-1"] and not changes  # one failure is not enough
    await monitor.check()
    assert not view.live["exstream-1"] and len(changes) == 1
    answers[PEERS[1]] = None
    await monitor.check()
    assert view.live["exstream-1"] and len(changes) == 2


def view_settings(view: Membership) -> ClusterSettings:
    return ClusterSettings(instance=view.me, members=NAMES, peers=PEERS, down_after=2)


async def test_probe_reports_why_a_peer_is_not_ready() -> None:
    problem = await probe_ready(f"http://127.0.0.1:{free_port()}", 1.0)
    assert problem is not None and "refused" in problem.lower()


@pytest.mark.parametrize(
    ("path", "channel"),
    [
        ("/stream/3.ts", 3),
        ("/stream/3.m3u8", 3),
        ("/stream/12/segment-5.ts", 12),
        ("/api/channels/7", 7),
        ("/api/channels/7/restart", 7),
        ("/api/channels", None),
        ("/iptv/channels.m3u", None),
        ("/stream/x.ts", None),
    ],
)
def test_the_paths_of_a_channel(path: str, channel: int | None) -> None:
    assert channel_of_path(path) == channel


def test_members_share_their_xmltv_ids_whatever_their_data_directories() -> None:
    one = cluster("exstream-0", peer_url="http://{member}:1")
    two = parse_settings(
        {
            "server": {"data_dir": "/elsewhere"},
            "cluster": {"instance": "exstream-2", "instances": 3, "peer_url": "http://{member}:1"},
        },
        Path("/srv/channels.toml"),
        {},
    )
    assert xmltv_instance(one) == xmltv_instance(two)
