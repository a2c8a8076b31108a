"""Loopback addresses for the servers that tests and benches start."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.polling import wait_for


def free_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, for a server to listen on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A loopback port free now, for a server in another process to bind."""
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    """A loopback UDP port free now, for a datagram listener to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def discovery_port_held(timeout: float = 240.0) -> Iterator[None]:
    """Hold this machine's UDP 65001 (HDHomeRun discovery: one per machine) against the
    other test processes that ask for it (`make test` runs several), until the block ends;
    wait for it at most `timeout` s."""
    path = Path(tempfile.gettempdir()) / "exstream-tests-udp-65001.lock"
    with path.open("a+b") as lock:
        wait_for(lambda: _try_lock(lock.fileno()), timeout, "UDP 65001, held by another test")
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
