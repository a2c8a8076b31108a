"""End to end: the HDHomeRun emulation as real tuner clients see it.

`hdhomerun_config` (libhdhomerun's own client) finds the device by UDP discovery and
checks its id; the lineup has the fields and JSON types Jellyfin reads; HEAD on a stream
starts nothing. The real client sends discovery to UDP 65001 only, so those tests need
that port: they are skipped, saying why, when another program holds it.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from service.discovery import (
    DISCOVER_REQ,
    TAG_BASE_URL,
    TAG_DEVICE_ID,
    TAG_DEVICE_TYPE,
    TAG_LINEUP_URL,
    WILDCARD,
    decode,
    encode,
)
from tests.harness.config import write_config
from tests.harness.network import discovery_port_held
from tests.harness.server import Server, run_server
from tests.harness.standin import StandInFactory, spawns
from tests.polling import wait_for

DISCOVERY_PORT = 65001
FOUND = re.compile(r"^hdhomerun device ([0-9A-F]{8}) found at (\d+\.\d+\.\d+\.\d+)$", re.M)
LISTENING = "HDHomeRun discovery on UDP"
NOT_LISTENING = "HDHomeRun discovery is off"
DISCOVERY_ON = {"discovery": True}


@pytest.fixture(scope="module", autouse=True)
def discovery_port() -> Iterator[None]:
    """No other test process (the demo's tuner) binds UDP 65001 while these run."""
    with discovery_port_held():
        yield


def hdhomerun_config(*args: str) -> str:
    result = subprocess.run(
        ["hdhomerun_config", *args], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout + result.stderr


def discover(target: str | None = None) -> list[tuple[str, str]]:
    """(device id, address) of every device `hdhomerun_config discover` finds."""
    output = hdhomerun_config("discover", *([target] if target else []))
    if "error sending discover request" in output:
        pytest.skip(f"this machine cannot send the discovery request: {output.strip()}")
    return FOUND.findall(output)


def ask(address: str) -> dict[int, bytes]:
    """The fields of the discovery answer from `address` to a request for any tuner."""
    request = encode(DISCOVER_REQ, [(TAG_DEVICE_TYPE, struct.pack(">I", WILDCARD))])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(request, (address, DISCOVERY_PORT))
        _, fields = decode(sock.recv(2048))
    return dict(fields)


def port_is_free() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", DISCOVERY_PORT))
        except OSError:
            return False
    return True


@pytest.fixture
def free_discovery_port() -> None:
    if not port_is_free():
        pytest.skip(f"UDP {DISCOVERY_PORT} is taken by another program on this machine")


def listening(server: Server) -> None:
    """Return once the server listens for discovery; skip when it found the port taken."""
    wait_for(
        lambda: LISTENING in server.log() or NOT_LISTENING in server.log(),
        10,
        "the discovery start line",
    )
    if NOT_LISTENING in server.log():
        line = next(x for x in server.log().splitlines() if NOT_LISTENING in x)
        pytest.skip(f"UDP {DISCOVERY_PORT} was taken when the server started: {line}")


def lan_addresses() -> list[str]:
    return [
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET and not address.address.startswith("127.")
    ]


@pytest.fixture
def tuner_config(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    channels: list[dict[str, Any]] = [
        {"number": 1, "name": "One", "media": [str(tmp_path / "empty")]},
        {"number": 2, "name": "Two", "media": [str(tmp_path / "empty")], "favorite": False},
    ]
    return write_config(tmp_path, channels, hdhomerun=DISCOVERY_ON)


def test_hdhomerun_config_discovers_the_device_and_its_base_url(
    free_discovery_port: None, tuner_config: Path
) -> None:
    with run_server(tuner_config) as server:
        listening(server)
        device_id = server.get("/discover.json").json()["DeviceID"]
        assert discover("127.0.0.1") == [(device_id, "127.0.0.1")]
        answer = ask("127.0.0.1")
        assert answer[TAG_DEVICE_ID] == bytes.fromhex(device_id)
        assert answer[TAG_BASE_URL].decode() == server.base_url
        assert answer[TAG_LINEUP_URL].decode() == f"{server.base_url}/lineup.json"
        # A broadcast, as clients send it: answered on every address it arrives on, each
        # answer with a base URL that reaches this (loopback) server.
        found = discover()
        assert found, "no device found by broadcast"
        for found_id, address in found:
            assert found_id == device_id
            assert ask(address)[TAG_BASE_URL].decode() == server.base_url
        assert server.metric("exstream_discovery_requests_total", outcome="answered") >= 4


def test_a_wildcard_bind_answers_with_the_address_the_request_arrived_on(
    free_discovery_port: None, tmp_path: Path
) -> None:
    config = write_config(tmp_path, [], server={"host": "0.0.0.0"}, hdhomerun=DISCOVERY_ON)
    with run_server(config) as server:
        listening(server)
        for address in ["127.0.0.1", *lan_addresses()]:
            base_url = ask(address)[TAG_BASE_URL].decode()
            assert base_url == f"http://{address}:{server.port}"
            assert httpx.get(f"{base_url}/discover.json", timeout=10).json()["BaseURL"] == (
                base_url
            )


def test_with_discovery_off_nothing_answers(free_discovery_port: None, tmp_path: Path) -> None:
    config = write_config(tmp_path, [], hdhomerun={"discovery": False})
    with run_server(config) as server:
        assert server.get("/discover.json").status_code == 200
        assert discover("127.0.0.1") == []
        assert port_is_free()
        assert LISTENING not in server.log() and NOT_LISTENING not in server.log()


def test_the_device_id_is_valid_survives_restarts_moves_with_the_data_and_can_be_set(
    tmp_path: Path,
) -> None:
    def config_in(name: str, **sections: dict[str, Any]) -> Path:
        (tmp_path / name).mkdir(exist_ok=True)
        return write_config(tmp_path / name, [], **sections)

    def device_id(config: Path) -> str:
        with run_server(config) as server:
            discover_json = server.get("/discover.json").json()
            assert f"<serialNumber>{discover_json['DeviceID']}<" in server.get("/device.xml").text
            found: str = discover_json["DeviceID"]
            return found

    first = config_in("first")
    made = device_id(first)
    assert re.fullmatch(r"[0-9A-F]{8}", made)
    # libhdhomerun's client checks the check digit before anything else.
    assert "invalid device id" not in hdhomerun_config(made, "get", "/sys/model")
    assert device_id(first) == made
    shutil.copytree(tmp_path / "first" / "data", tmp_path / "moved" / "data")
    assert device_id(config_in("moved")) == made
    chosen = config_in(
        "chosen",
        server={"data_dir": str(tmp_path / "first" / "data")},
        hdhomerun={"device_id": "1057a9b2", "friendly_name": "Den"},
    )
    assert device_id(chosen) == "1057A9B2"
    # The kept id is left as it was: without the setting, the tuner is the old one again.
    assert device_id(first) == made


def test_the_lineup_has_the_fields_and_types_jellyfin_reads(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    channels: list[dict[str, Any]] = [
        {"number": 1, "name": "One", "media": [str(tmp_path / "empty")]},
        {"number": 2, "name": "Two", "media": [str(tmp_path / "empty")], "favorite": False},
    ]
    config = write_config(tmp_path, channels, pool={"max_processes": 3})
    with run_server(config) as server:
        lineup = server.get("/lineup.json").json()
        discover_json = server.get("/discover.json").json()
    strings = ("GuideNumber", "GuideName", "VideoCodec", "AudioCodec", "URL")
    for entry in lineup:
        assert all(isinstance(entry[key], str) for key in strings), entry
        # Jellyfin reads these as booleans given as numbers (a real tuner's 0/1).
        assert all(
            entry[key] in (0, 1) and type(entry[key]) is int for key in ("HD", "Favorite", "DRM")
        )
        assert (entry["VideoCodec"], entry["AudioCodec"], entry["DRM"]) == ("H264", "AAC", 0)
        assert entry["HD"] == 0  # the test encodes are 240 lines
        assert entry["URL"] == f"{server.base_url}/stream/{entry['GuideNumber']}.ts"
    # "Import favourites only" takes the channels that are favourites and no others.
    assert [e["GuideNumber"] for e in lineup if e["Favorite"]] == ["1"]
    assert [e["GuideName"] for e in lineup] == ["One", "Two"]
    # A model that does not transcode: Jellyfin then asks for no `?transcode=` profile.
    assert "HDTC" not in discover_json["ModelNumber"].upper()
    assert discover_json["TunerCount"] == 3
    assert discover_json["LineupURL"] == f"{server.base_url}/lineup.json"


def test_head_on_a_stream_answers_headers_and_starts_nothing(stand_in: StandInFactory) -> None:
    config, env, log = stand_in([{"number": 1, "name": "On demand", "idle_grace": 0.5}])
    with run_server(config, env) as server, server.client() as client:
        head = client.head("/stream/1.ts")
        assert head.status_code == 200
        assert head.headers["content-type"] == "video/mp2t"
        assert "content-length" not in head.headers and head.content == b""
        missing = client.head("/stream/99.ts")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        channel = server.channel(1)
        assert (channel["state"], channel["viewers"], channel["pid"]) == ("stopped", 0, None)
        assert server.metric("exstream_channel_viewers", channel="1") == 0
        assert spawns(log, "1") == []
        # The same channel, watched: its process starts (the spawn log works).
        with client.stream("GET", "/stream/1.ts") as response:
            assert response.status_code == 200
            next(response.iter_raw())
        assert len(spawns(log, "1")) == 1
