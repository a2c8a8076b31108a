"""The HDHomeRun emulation's parts: the discovery packet codec, device ids and their
check digit, the kept id, the discovery responder, its settings and the HTTP documents."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import subprocess
import warnings
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from service import deviceid
from service.app import create_app
from service.config import Settings, parse_settings
from service.discovery import (
    DISCOVER_REQ,
    DISCOVER_RPY,
    TAG_BASE_URL,
    TAG_DEVICE_ID,
    TAG_DEVICE_TYPE,
    TAG_LINEUP_URL,
    TAG_MULTI_TYPE,
    TAG_TUNER_COUNT,
    WILDCARD,
    BaseUrls,
    DiscoverRequest,
    MalformedPacket,
    Responder,
    decode,
    encode,
    start_discovery,
)
from service.errors import ConfigError
from service.tuner import Tuner, tuner_of_settings
from telemetry.metrics import Metrics
from tests.harness.network import free_udp_port
from tests.loglines import capturing, level_and_message
from tests.service.api.conftest import running

# What libhdhomerun (hdhomerun_config discover) and Jellyfin send: any tuner, any id.
WIRE_REQUEST = bytes.fromhex("0002000c0104ffffffff0204ffffffff73cc7d8f")
VALID_ID = 0x1057A9B2  # accepted by hdhomerun_config: see the test with the real client
TUNER = Tuner(device_id=VALID_ID, friendly_name="Test", tuner_count=300, hd=True)

fields_strategy = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=5
).filter(lambda fields: sum(len(v) + 3 for _, v in fields) <= 0xFFFF)


def settings_of(tmp_path: Path, **sections: Any) -> Settings:
    data = {"server": {"data_dir": str(tmp_path / "data")}, **sections}
    return parse_settings(data, tmp_path / "channels.toml", {})


def problems_of(tmp_path: Path, **sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_of(tmp_path, **sections)
    return list(caught.value.problems)


def request(*fields: tuple[int, int]) -> bytes:
    return encode(DISCOVER_REQ, [(tag, struct.pack(">I", value)) for tag, value in fields])


# --- the packet codec ------------------------------------------------------------------


def test_a_request_is_encoded_as_libhdhomerun_sends_it() -> None:
    packet = request((TAG_DEVICE_TYPE, WILDCARD), (TAG_DEVICE_ID, WILDCARD))
    assert packet == WIRE_REQUEST
    assert decode(WIRE_REQUEST) == (
        DISCOVER_REQ,
        [(TAG_DEVICE_TYPE, b"\xff" * 4), (TAG_DEVICE_ID, b"\xff" * 4)],
    )


def test_the_crc_is_crc32_of_header_and_payload_little_endian() -> None:
    packet = encode(DISCOVER_RPY, [(TAG_BASE_URL, b"http://192.0.2.1:8410")])
    assert packet[-4:] == struct.pack("<I", zlib.crc32(packet[:-4]))
    assert struct.unpack(">HH", packet[:4]) == (DISCOVER_RPY, len(packet) - 8)


def test_values_of_128_bytes_or_more_have_a_two_byte_length() -> None:
    packet = encode(DISCOVER_RPY, [(TAG_LINEUP_URL, b"x" * 200)])
    # The low 7 bits with the top bit set, then the rest.
    assert packet[4:7] == bytes((TAG_LINEUP_URL, 0x80 | (200 & 0x7F), 200 >> 7))
    assert decode(packet) == (DISCOVER_RPY, [(TAG_LINEUP_URL, b"x" * 200)])


@given(st.integers(0, 0xFFFF), fields_strategy)
def test_packets_round_trip(packet_type: int, fields: list[tuple[int, bytes]]) -> None:
    assert decode(encode(packet_type, fields)) == (packet_type, fields)


@given(fields_strategy, st.data())
def test_any_changed_byte_is_caught(fields: list[tuple[int, bytes]], data: st.DataObject) -> None:
    packet = bytearray(encode(DISCOVER_REQ, fields))
    index = data.draw(st.integers(0, len(packet) - 1))
    packet[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(MalformedPacket):
        decode(bytes(packet))


@given(st.binary(max_size=64))
def test_any_bytes_are_a_request_or_malformed_nothing_else(garbage: bytes) -> None:
    # Raw, and inside a well-formed frame (so that the fields are parsed).
    for packet in (garbage, framed(garbage)):
        with suppress(MalformedPacket):
            assert isinstance(DiscoverRequest.of(packet), DiscoverRequest)


def framed(payload: bytes, packet_type: int = DISCOVER_REQ) -> bytes:
    """A packet with a right CRC around any payload, well-formed or not."""
    frame = struct.pack(">HH", packet_type, len(payload)) + payload
    return frame + struct.pack("<I", zlib.crc32(frame))


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"", "0 bytes"),
        (WIRE_REQUEST[:-1], "bytes for a payload of 12"),
        (WIRE_REQUEST + b"\x00", "bytes for a payload of 12"),
        (framed(b"\x01"), "header past the end"),
        (framed(b"\x01\x04\xff\xff"), "value past the end"),
        (framed(b"\x01\x81"), "length past the end"),
        (framed(b"\x01\x03\xff\xff\xff"), "a device type of 3 bytes"),
        (framed(b"\x02\x05\xff\xff\xff\xff\xff"), "a device id of 5 bytes"),
        (framed(b"", packet_type=0x0004), "packet type 0x0004"),
        (WIRE_REQUEST[:-4] + b"\x00\x00\x00\x00", "bad CRC"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(packet: bytes, why: str) -> None:
    with pytest.raises(MalformedPacket, match=why):
        DiscoverRequest.of(packet)


def test_a_request_says_which_tuners_answer() -> None:
    def wants(*fields: tuple[int, int]) -> bool:
        return DiscoverRequest.of(request(*fields)).wants(VALID_ID)

    assert wants((TAG_DEVICE_TYPE, WILDCARD), (TAG_DEVICE_ID, WILDCARD))
    assert wants((TAG_DEVICE_TYPE, 1), (TAG_DEVICE_ID, VALID_ID))
    assert wants((TAG_DEVICE_TYPE, 1))  # newer clients leave the wildcard id out
    assert wants()
    assert not wants((TAG_DEVICE_TYPE, 5))  # storage devices only
    assert not wants((TAG_DEVICE_TYPE, WILDCARD), (TAG_DEVICE_ID, deviceid.generate()))
    several = encode(DISCOVER_REQ, [(TAG_MULTI_TYPE, struct.pack(">II", 5, 1))])
    assert DiscoverRequest.of(several).wants(VALID_ID)


# --- device ids ------------------------------------------------------------------------


@given(st.integers(0, 0xFFFFFFF))
def test_one_last_digit_in_sixteen_is_the_check_digit(body: int) -> None:
    valid = [d for d in range(16) if deviceid._checksum((body << 4) | d) == 0]
    assert valid == [deviceid.with_check_digit(body) & 0xF]


def test_made_ids_are_valid_and_name_one_device() -> None:
    ids = {deviceid.generate() for _ in range(200)}
    assert len(ids) > 190
    assert all(deviceid.is_valid(i) for i in ids)
    # The wildcard, "no device" and first-generation tuners' ids pass the check digit.
    for reserved in (0x00000000, 0xFFFFFFFF, deviceid.with_check_digit(0x1010000)):
        assert deviceid._checksum(reserved) == 0
        assert not deviceid.is_valid(reserved)
    # Even a random source that keeps giving reserved ones ends with a valid id.
    bodies = iter([0xFFFFFFF, 0x1010000, 0x0000000, 0x1057A9B])
    assert deviceid.generate(lambda bits: next(bodies)) == VALID_ID


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1057A9B2", VALID_ID),
        ("1057a9b2", VALID_ID),
        ("1057A9B3", None),
        ("1057A9B", None),
        ("01057A9B2", None),
        ("1057A9BG", None),
        (" 1057A9B2", None),
        ("FFFFFFFF", None),
    ],
)
def test_ids_are_parsed_from_8_hex_digits(text: str, parsed: int | None) -> None:
    assert deviceid.parse(text) == parsed


def hdhomerun_config_says(device_id: str) -> str:
    result = subprocess.run(
        ["hdhomerun_config", device_id, "get", "/sys/model"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout + result.stderr


def test_the_real_client_accepts_made_ids_and_refuses_a_wrong_check_digit() -> None:
    made = deviceid.text(deviceid.generate())
    wrong = made[:7] + f"{(int(made[7], 16) + 1) % 16:X}"
    assert "invalid device id" in hdhomerun_config_says(wrong)
    # A valid id gets as far as looking for the device (which is not there).
    assert "invalid device id" not in hdhomerun_config_says(made)
    assert "invalid device id" not in hdhomerun_config_says(deviceid.text(VALID_ID))


# --- the kept id -----------------------------------------------------------------------


def test_the_id_is_made_once_and_kept(tmp_path: Path) -> None:
    with capturing(level_and_message, "INFO") as lines:
        first = deviceid.kept_device_id(tmp_path / "data")
        again = deviceid.kept_device_id(tmp_path / "data")
    assert first == again and deviceid.is_valid(first)
    path = tmp_path / "data" / deviceid.ID_FILE
    assert path.read_text() == f"{first:08X}\n"
    assert lines == [("INFO", f"HDHomeRun device id {first:08X} made and kept in {path}")]
    assert [p.name for p in path.parent.iterdir()] == [deviceid.ID_FILE]  # no partial file


def test_a_damaged_id_file_is_replaced_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / deviceid.ID_FILE
    path.write_bytes(b"\xffnot an id")
    with capturing(level_and_message, "WARNING") as lines:
        made = deviceid.kept_device_id(tmp_path)
    assert path.read_text() == f"{made:08X}\n"
    ((level, text),) = lines
    assert level == "WARNING" and "does not hold a valid HDHomeRun device id" in text


@pytest.mark.parametrize("blocked", ["parent_is_a_file", "id_is_a_directory"])
def test_an_unusable_data_dir_keeps_the_id_in_memory_with_one_warning(
    tmp_path: Path, blocked: str
) -> None:
    if blocked == "parent_is_a_file":
        (tmp_path / "file").write_text("")
        data_dir = tmp_path / "file" / "data"
    else:
        data_dir = tmp_path
        (tmp_path / deviceid.ID_FILE).mkdir()
    with capturing(level_and_message, "INFO") as lines:
        made = deviceid.kept_device_id(data_dir)
    assert deviceid.is_valid(made)
    ((level, text),) = lines
    assert level == "WARNING"
    assert f"HDHomeRun device id {made:08X} is kept in memory until the service restarts" in text
    assert "set [hdhomerun] device_id" in text


def test_the_configured_id_wins_and_no_file_is_written(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / deviceid.ID_FILE).write_text("2D0BE63D\n")
    settings = settings_of(tmp_path, hdhomerun={"device_id": "1057a9b2", "friendly_name": "Den"})
    tuner = tuner_of_settings(settings)
    assert (tuner.device_id_text, tuner.friendly_name) == ("1057A9B2", "Den")
    assert (tmp_path / "data" / deviceid.ID_FILE).read_text() == "2D0BE63D\n"
    fresh = settings_of(tmp_path / "other", hdhomerun={"device_id": "1057A9B2"})
    tuner_of_settings(fresh)
    assert not (tmp_path / "other").exists()


# --- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"device_id": "1057A9B3"}, "hdhomerun.device_id: must be 8 hex digits ending in the"),
        ({"device_id": "FFFFFFFF"}, "hdhomerun.device_id: must be 8 hex digits ending in the"),
        ({"device_id": 1057}, "hdhomerun.device_id: expected a string, got int"),
        ({"friendly_name": " "}, "hdhomerun.friendly_name: must be 1 to 64 printable"),
        ({"friendly_name": "x" * 65}, "hdhomerun.friendly_name: must be 1 to 64 printable"),
        ({"friendly_name": "a\nb"}, "hdhomerun.friendly_name: must be 1 to 64 printable"),
        ({"discovery": "yes"}, "hdhomerun.discovery: expected a boolean, got a string"),
        ({"discovery_port": 0}, "hdhomerun.discovery_port: must be a port number (1-65535)"),
        ({"discovery_address": "::"}, "hdhomerun.discovery_address: must be an IPv4 address"),
        ({"tuners": 2}, "hdhomerun.tuners: unknown key (known: device_id, discovery,"),
    ],
)
def test_hdhomerun_settings_are_checked_with_their_key_path(
    tmp_path: Path, section: dict[str, Any], problem: str
) -> None:
    (found,) = problems_of(tmp_path, hdhomerun=section)
    assert found.startswith(problem), found


def test_favorite_is_a_boolean_per_channel_and_true_by_default(tmp_path: Path) -> None:
    channels = [{"number": 1, "name": "A"}, {"number": 2, "name": "B", "favorite": False}]
    settings = settings_of(tmp_path, channels=channels)
    assert [c.favorite for c in settings.channels] == [True, False]
    (found,) = problems_of(tmp_path, channels=[{"number": 1, "name": "A", "favorite": 1}])
    assert found == "channels[0].favorite: expected a boolean, got int"


def test_the_defaults_answer_discovery_on_65001(tmp_path: Path) -> None:
    hdhomerun = settings_of(tmp_path).hdhomerun
    assert (hdhomerun.discovery, hdhomerun.discovery_address, hdhomerun.discovery_port) == (
        True,
        "0.0.0.0",
        65001,
    )
    assert hdhomerun.device_id is None


# --- base URLs -------------------------------------------------------------------------


def urls(tmp_path: Path, local: Callable[[str], str], **server: Any) -> BaseUrls:
    settings = settings_of(tmp_path, server={"data_dir": str(tmp_path), "port": 8410, **server})
    return BaseUrls(settings, local_address=local)


def lan_route(remote: str) -> str:
    """This machine is 192.0.2.2 on the LAN; loopback answers loopback."""
    return remote if remote.startswith("127.") else "192.0.2.2"


def no_route(remote: str) -> str:
    raise OSError(101, "Network is unreachable")


def test_a_wildcard_bind_answers_the_address_the_requester_reaches() -> None:
    base = Path("/nonexistent")
    for host in ("0.0.0.0", "::"):
        found = urls(base, lan_route, host=host)
        assert found.for_requester("192.0.2.77") == "http://192.0.2.2:8410"
        assert found.for_requester("127.0.0.1") == "http://127.0.0.1:8410"
        assert found.for_requester("198.51.100.1") == "http://192.0.2.2:8410"
        assert urls(base, no_route, host=host).for_requester("198.51.100.1") is None


def test_a_loopback_bind_answers_requesters_on_this_machine_only() -> None:
    found = urls(Path("/nonexistent"), lan_route, host="127.0.0.1")
    assert found.for_requester("127.0.0.1") == "http://127.0.0.1:8410"
    # A broadcast sent from this machine's LAN address.
    assert found.for_requester("192.0.2.2") == "http://127.0.0.1:8410"
    assert found.for_requester("192.0.2.77") is None


def test_a_named_address_and_public_url_are_given_as_they_are() -> None:
    base = Path("/nonexistent")
    assert urls(base, lan_route, host="192.0.2.9").for_requester("192.0.2.77") == (
        "http://192.0.2.9:8410"
    )
    assert urls(base, lan_route, host="2001:db8::1").for_requester("192.0.2.77") == (
        "http://[2001:db8::1]:8410"
    )
    public = urls(base, no_route, host="127.0.0.1", public_url="https://tv.example/")
    assert public.for_requester("192.0.2.77") == "https://tv.example"


# --- the responder ---------------------------------------------------------------------


@asynccontextmanager
async def responder(tmp_path: Path, **server: Any) -> AsyncIterator[tuple[int, Metrics]]:
    port = free_udp_port()
    settings = settings_of(
        tmp_path,
        server={"data_dir": str(tmp_path), "port": 8410, **server},
        hdhomerun={"discovery_address": "127.0.0.1", "discovery_port": port},
    )
    metrics = Metrics(CollectorRegistry())
    discovery = await start_discovery(settings, TUNER, metrics)
    assert discovery is not None
    try:
        yield port, metrics
    finally:
        await discovery.close()
    assert discovery.responder.closed.is_set()


async def exchange(port: int, *packets: bytes) -> list[bytes]:
    """The answers to `packets`: once a request sent after them from another socket has
    its answer, the responder has answered them all (it answers in order)."""
    loop = asyncio.get_running_loop()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker,
    ):
        for sock in (sender, marker):
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
        for packet in packets:
            await loop.sock_sendall(sender, packet)
        await loop.sock_sendall(marker, WIRE_REQUEST)
        async with asyncio.timeout(5):
            await loop.sock_recv(marker, 2048)
        answers = []
        while True:
            try:
                answers.append(sender.recv(2048))
            except BlockingIOError:
                return answers


def outcomes(metrics: Metrics) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "exstream_discovery_requests_total":
                found[sample.labels["outcome"]] = sample.value
    return {k: v for k, v in found.items() if v}


async def test_the_answer_names_the_tuner_and_its_urls(tmp_path: Path) -> None:
    async with responder(tmp_path) as (port, metrics):
        (answer,) = await exchange(port, WIRE_REQUEST)
    packet_type, fields = decode(answer)
    assert packet_type == DISCOVER_RPY
    assert dict(fields) == {
        TAG_DEVICE_TYPE: struct.pack(">I", 1),
        TAG_DEVICE_ID: struct.pack(">I", VALID_ID),
        TAG_TUNER_COUNT: bytes((255,)),  # 300 tuners do not fit the field
        0x2B: b"exstream",
        TAG_BASE_URL: b"http://127.0.0.1:8410",
        TAG_LINEUP_URL: b"http://127.0.0.1:8410/lineup.json",
    }
    assert outcomes(metrics) == {"answered": 2}  # with the marker request


async def test_malformed_and_foreign_requests_get_no_answer_and_are_counted(
    tmp_path: Path,
) -> None:
    ignored = [
        b"\x00" * 3,
        WIRE_REQUEST[:-4] + b"\x00\x00\x00\x00",
        b"\xff" * 2000,
        request((TAG_DEVICE_TYPE, 5), (TAG_DEVICE_ID, WILDCARD)),
        request((TAG_DEVICE_TYPE, 1), (TAG_DEVICE_ID, deviceid.with_check_digit(0x2000000))),
    ]
    async with responder(tmp_path) as (port, metrics):
        assert await exchange(port, *ignored) == []
        assert outcomes(metrics) == {"answered": 1, "malformed": 3, "other_device": 2}
        # A request for this tuner by its id is answered.
        by_id = request((TAG_DEVICE_TYPE, 1), (TAG_DEVICE_ID, VALID_ID))
        assert len(await exchange(port, by_id)) == 1


async def test_a_taken_port_leaves_discovery_off_with_one_warning(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        settings = settings_of(
            tmp_path, hdhomerun={"discovery_address": "127.0.0.1", "discovery_port": port}
        )
        with capturing(level_and_message, "INFO") as lines:
            discovery = await start_discovery(settings, TUNER, Metrics(CollectorRegistry()))
    assert discovery is None
    ((level, text),) = lines
    assert level == "WARNING"
    assert text.startswith(f"HDHomeRun discovery is off: cannot listen on UDP 127.0.0.1:{port}")


def test_a_taken_port_leaves_nothing_open_under_uvloop(tmp_path: Path) -> None:
    # uvicorn runs the service on uvloop, whose own bind failure leaves a transport
    # unclosed: reported at garbage collection, long after, in whatever runs then.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        taken = {"discovery_address": "127.0.0.1", "discovery_port": holder.getsockname()[1]}
        settings = settings_of(tmp_path, hdhomerun=taken)
        metrics = Metrics(CollectorRegistry())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            discovery = uvloop.run(start_discovery(settings, TUNER, metrics))
            gc.collect()
    assert discovery is None
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def test_requests_from_where_the_service_cannot_be_reached_are_logged_once(
    tmp_path: Path,
) -> None:
    metrics = Metrics(CollectorRegistry())
    protocol = Responder(TUNER, urls(tmp_path, lan_route, host="127.0.0.1"), metrics)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    with capturing(level_and_message, "INFO") as lines:
        for _ in range(3):
            protocol.datagram_received(WIRE_REQUEST, ("192.0.2.77", 5000))
        protocol.datagram_received(WIRE_REQUEST, ("127.0.0.1", 5000))
    assert [addr for _, addr in transport.sent] == [("127.0.0.1", 5000)]
    assert outcomes(metrics) == {"unreachable": 3, "answered": 1}
    ((level, text),) = lines
    assert level == "INFO"
    assert text.startswith(
        "HDHomeRun discovery request from 192.0.2.77 not answered: it cannot reach"
        " http://127.0.0.1:8410"
    )


def test_answers_are_dropped_while_the_socket_buffer_is_full(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    protocol = Responder(TUNER, urls(tmp_path, lan_route, host="0.0.0.0"), metrics)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.pause_writing()
    protocol.datagram_received(WIRE_REQUEST, ("192.0.2.77", 5000))
    protocol.resume_writing()
    protocol.datagram_received(WIRE_REQUEST, ("192.0.2.77", 5000))
    assert len(transport.sent) == 1
    assert outcomes(metrics) == {"dropped": 1, "answered": 1}


# --- the HTTP documents ----------------------------------------------------------------


async def test_lineup_and_discover_are_what_jellyfin_reads(tmp_path: Path) -> None:
    settings = settings_of(
        tmp_path,
        ffmpeg={"height": 720},
        hdhomerun={"discovery": False, "friendly_name": "Den & Co", "device_id": "1057A9B2"},
        channels=[{"number": 7, "name": "Seven"}, {"number": 9, "name": "Nine", "favorite": False}],
    )
    app = create_app(settings, registry=CollectorRegistry())
    async with running(app) as client:
        lineup = (await client.get("/lineup.json")).json()
        discover = (await client.get("/discover.json")).json()
        device = (await client.get("/device.xml")).text
    assert lineup == [
        {
            "GuideNumber": "7",
            "GuideName": "Seven",
            "VideoCodec": "H264",
            "AudioCodec": "AAC",
            "HD": 1,
            "Favorite": 1,
            "DRM": 0,
            "URL": "http://test/stream/7.ts",
        },
        {
            "GuideNumber": "9",
            "GuideName": "Nine",
            "VideoCodec": "H264",
            "AudioCodec": "AAC",
            "HD": 1,
            "Favorite": 0,
            "DRM": 0,
            "URL": "http://test/stream/9.ts",
        },
    ]
    assert discover["DeviceID"] == "1057A9B2"
    assert discover["FriendlyName"] == "Den & Co"
    assert "hdtc" not in discover["ModelNumber"].lower()  # Jellyfin: "can transcode"
    assert "<friendlyName>Den &amp; Co</friendlyName>" in device
    assert "<serialNumber>1057A9B2</serialNumber>" in device
