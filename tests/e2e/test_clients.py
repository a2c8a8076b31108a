"""Hostile and careless clients against a real server, over raw sockets: huge and slow
request heads, idle connections, too many connections or log tails, and viewers that
stop reading."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.wire import worst_gap
from tests.harness.config import one_channel, write_config
from tests.harness.server import Server, run_server
from tests.harness.standin import StandInFactory
from tests.harness.viewer import Viewer
from tests.polling import wait_for

MiB = 1024 * 1024
HUGE_HEAD = 20 * MiB
SLOWLORIS = 1000


def connect(server: Server, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def read_to_end_strict(sock: socket.socket) -> None:
    """Read until the server ends the connection; a reset is raised, not swallowed."""
    while sock.recv(65536):
        pass


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def json_lines(server: Server) -> list[dict[str, Any]]:
    entries = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def raise_own_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_huge_request_heads_get_431_and_server_memory_stays_flat(tmp_path: Path) -> None:
    with run_server(write_config(tmp_path, [])) as server:
        before = vm_rss(server.pid)

        def send_huge_head() -> tuple[int, bytes]:
            sent = 0
            with connect(server) as sock:
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
                    chunk = b"a" * 65536
                    while sent < HUGE_HEAD:
                        sock.sendall(chunk)
                        sent += len(chunk)
                except OSError:
                    pass  # refused: the server closed while we were still sending
                try:
                    return sent, read_to_end(sock)
                except TimeoutError:
                    return sent, b"(no answer)"

        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(send_huge_head) for _ in range(20)]
            peak = before

            def attack_over() -> bool:
                nonlocal peak
                peak = max(peak, vm_rss(server.pid))
                return all(f.done() for f in futures)

            wait_for(attack_over, 120, "the senders to finish", interval=0.01)
            results = [f.result() for f in futures]
        peak = max(peak, vm_rss(server.pid))
        print(f"RSS {before / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB during 20 huge heads")
        assert peak - before < 32 * MiB, f"RSS grew {(peak - before) / MiB:.0f} MiB"
        for sent, answer in results:
            assert sent < HUGE_HEAD
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        wait_for(
            lambda: (
                server.metric("exstream_http_connections_rejected_total", reason="header_too_large")
                == 20
            ),
            10,
            "20 refusals counted",
        )
        assert server.get("/healthz").status_code == 200


def test_the_head_limit_counts_the_head_only_and_holds_within_one_read(tmp_path: Path) -> None:
    with run_server(write_config(tmp_path, [], server={"max_header_bytes": 4096})) as server:

        def answer(*parts: bytes) -> bytes:
            with connect(server) as sock:
                for part in parts:
                    sock.sendall(part)
                return sock.recv(65536)

        big = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n"
        assert answer(big).startswith(b"HTTP/1.1 431 ")  # whole, in one write
        head = b"POST /lineup.post HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n"
        body = b"x" * 60000
        # A small head with a big body in the same write, or with its blank line split
        # over two writes: neither is a big head.
        for parts in ((head + b"\r\n" + body,), (head + b"\r", b"\n" + body)):
            assert not answer(*parts).startswith(b"HTTP/1.1 431 "), parts[0][:40]
        assert (
            server.metric("exstream_http_connections_rejected_total", reason="header_too_large")
            == 1
        )


def test_slow_request_heads_are_closed_after_the_header_timeout_while_viewers_watch(
    stand_in: StandInFactory,
) -> None:
    raise_own_open_files(SLOWLORIS + 200)
    config, env, _ = stand_in(server={"header_timeout": 1.0})
    with run_server(config, env) as server, ExitStack() as stack:
        viewer = Viewer(server, 1)
        viewer.start()
        stack.callback(viewer.stop.set)
        wait_for(lambda: len(viewer.arrivals) > 5, 30, "the viewer's data")
        started = time.monotonic()
        selector = selectors.DefaultSelector()
        stack.callback(selector.close)
        answers: dict[socket.socket, bytes] = {}
        for _ in range(SLOWLORIS):
            sock = connect(server)
            stack.callback(sock.close)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            answers[sock] = b""
        opened = time.monotonic()
        deadline = opened + 1.0 + 2.0
        open_socks = set(answers)
        trickled = opened
        while open_socks and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.05):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    answers[ready] += data
                    continue
                selector.unregister(ready)
                open_socks.discard(ready)
            if time.monotonic() - trickled > 0.25:  # a slow client keeps sending headers
                trickled = time.monotonic()
                for sock in open_socks:
                    with suppress(OSError):  # closed by the server meanwhile
                        sock.send(b"X-Slow: 1\r\n")
        assert not open_socks, f"{len(open_socks)} slow heads still open"
        print(f"{SLOWLORIS} slow heads closed {time.monotonic() - started:.2f}s after the first")
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers.values())
        assert any(a.startswith(b"HTTP/1.1 408 ") for a in answers.values())
        during = viewer.since(started)
        assert sum(n for _, n in during) > 0
        assert worst_gap(during) < 1.0, worst_gap(during)
        assert (
            server.metric("exstream_http_connections_rejected_total", reason="header_timeout")
            == SLOWLORIS
        )
        lines = [e for e in json_lines(server) if e["extra"].get("reason") == "header_timeout"]
        assert [e["level"] for e in lines] == ["WARNING"], lines


def test_connections_beyond_the_cap_get_503_and_idle_ones_are_closed(tmp_path: Path) -> None:
    config = write_config(tmp_path, [], server={"max_connections": 40, "header_timeout": 3.0})
    with run_server(config) as server, ExitStack() as stack:
        assert server.metric("exstream_http_connections_limit") == 40
        idle = [stack.enter_context(connect(server)) for _ in range(40)]
        extra = [stack.enter_context(connect(server)) for _ in range(10)]
        for sock in extra:
            answer = read_to_end(sock)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), answer
            assert b"retry-after: " in head.lower()
            assert json.loads(body)["error"] == "too_many_connections"
        # Idle connections are closed at the header timeout, without an answer.
        for sock in idle:
            assert read_to_end(sock) == b""
        assert (
            server.metric("exstream_http_connections_rejected_total", reason="connection_limit")
            == 10
        )
        assert server.metric("exstream_http_connections_rejected_total", reason="idle") == 40
        assert server.metric("exstream_http_connections") == 1  # this scrape
        reported = [e for e in json_lines(server) if e["message"].startswith("client connection")]
        assert sorted((e["extra"]["reason"], e["level"]) for e in reported) == [
            ("connection_limit", "WARNING"),
            ("idle", "INFO"),
        ]


def test_idle_connections_cannot_take_the_descriptors_ffmpeg_needs(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    config = one_channel(tmp_path, clips(3, 2.0), server={"header_timeout": 30.0})
    with run_server(config, open_files=256) as server, ExitStack() as stack:
        assert server.metric("exstream_open_files_limit") == 256
        assert server.metric("exstream_http_connections_limit") == 256 - 64 - 8
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel running")

        def processes() -> set[int]:
            return {p.pid for p in server.children("exstream_channel=")}

        first = wait_for(processes, 10, "the channel's process")
        held = [stack.enter_context(connect(server)) for _ in range(300)]

        def new_process() -> bool:
            return bool(processes() - first)

        # Items follow one another: the next spawn comes while every connection is held.
        wait_for(new_process, 30, "a spawn while connections are held")
        refused = 0
        for sock in held:
            sock.setblocking(False)
            with suppress(BlockingIOError):
                refused += sock.recv(65536).startswith(b"HTTP/1.1 503 ")
        assert refused >= 300 - (256 - 64 - 8)
        stack.close()
        wait_for(lambda: server.metric("exstream_http_connections") == 1, 10, "sockets closed")
        assert server.metric("exstream_pool_acquire_failures_total", reason="spawn_failed") == 0
        assert "Too many open files" not in server.log()


def test_log_tails_beyond_the_cap_get_503_and_open_ones_keep_working(tmp_path: Path) -> None:
    config = write_config(tmp_path, [], server={"max_log_tails": 2})
    with run_server(config) as server, ExitStack() as stack:
        client = stack.enter_context(server.client())
        tails = []
        for _ in range(2):
            response = stack.enter_context(client.stream("GET", "/api/logs/stream"))
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines) == ": exstream log tail"
            tails.append((response, lines))
        wait_for(lambda: server.metric("exstream_log_tails") == 2, 10, "two tails counted")
        with client.stream("GET", "/api/logs/stream") as refused:
            assert refused.status_code == 503
            assert json.loads(refused.read())["error"] == "too_many_log_tails"
            assert refused.headers["retry-after"] == "10"
            assert refused.headers["connection"] == "close"
        assert server.metric("exstream_log_tails_rejected_total") == 1
        for _, lines in tails:  # the refusal's warning reaches the open tails
            events = (json.loads(line[6:]) for line in lines if line.startswith("data: "))
            assert any("live log tail refused" in event["message"] for event in events)
        tails[0][0].close()

        def reopened() -> bool:
            with client.stream("GET", "/api/logs/stream") as response:
                return response.status_code == 200

        wait_for(reopened, 10, "a freed slot")
        assert server.metric("exstream_log_tails") == 1


def test_viewer_that_stops_reading_is_reset_at_the_send_timeout(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    config = one_channel(
        tmp_path,
        clips(3, 2.0),
        ffmpeg={"video_bitrate": 2_000_000},
        stream={"send_timeout": 1.0},
    )
    with run_server(config) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel running")
        with connect(server, rcvbuf=4096) as stuck:
            stuck.sendall(b"GET /stream/1.ts HTTP/1.1\r\nHost: test\r\n\r\n")
            client_port = stuck.getsockname()[1]
            process = psutil.Process(server.pid)

            def server_holds_it() -> bool:
                return any(
                    c.raddr and c.raddr.port == client_port for c in process.net_connections("tcp")
                )

            assert wait_for(server_holds_it, 10, "the server to accept the viewer")
            wait_for(
                lambda: server.metric("exstream_viewer_drops_total", reason="send_timeout") == 1,
                30,
                "the viewer to be dropped",
            )
            # Unread bytes are still in our buffer; the server has let go already.
            wait_for(lambda: not server_holds_it(), 1.0, "the server to drop the socket")
            stuck.settimeout(5)
            with pytest.raises(ConnectionResetError):
                read_to_end_strict(stuck)
        left = [
            e for e in json_lines(server) if e["message"].startswith("viewer of channel 1 left")
        ]
        assert [(e["level"], e["extra"]["reason"]) for e in left] == [("INFO", "send_timeout")]
        errors = [e["message"] for e in json_lines(server) if e["level"] in ("ERROR", "CRITICAL")]
        assert errors == []


@pytest.fixture(autouse=True)
def _no_threads_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_for(
        lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
        30,
        "the test's threads to end",
    )
