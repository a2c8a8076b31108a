"""Loopback addresses for the servers that tests and benches start."""

from __future__ import annotations

import socket


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
