"""A real uvicorn serving an app inside this process, on a free loopback port: for tests
that want the app's objects at hand and real HTTP (a stream read through a client that
buffers it would prove nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from starlette.applications import Starlette

from service.__main__ import Server
from tests.harness.network import free_socket
from tests.polling import wait_for, wait_until


def _server(app: Starlette, graceful: float, on_shutdown: Callable[[], None] | None) -> Server:
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=round(graceful),
    )
    return Server(config, on_shutdown=on_shutdown or (lambda: None))


def _url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serving(
    app: Starlette, *, graceful: float = 2.0, on_shutdown: Callable[[], None] | None = None
) -> AsyncIterator[tuple[str, Server]]:
    """`app` served by a task of this event loop: (base URL, server). `on_shutdown` runs
    when shutdown begins, as the service's own server does."""
    sock = free_socket()
    server = _server(app, graceful, on_shutdown)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        assert not task.done(), "the server did not start"
        return server.started

    try:
        await wait_until(started, 30, "the server to start")
        yield _url(sock), server
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
        sock.close()


@contextlib.contextmanager
def serving_in_thread(app: Starlette, *, graceful: float = 2.0) -> Iterator[str]:
    """`app` served by a thread with an event loop of its own: its base URL."""
    sock = free_socket()
    server = _server(app, graceful, None)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the server did not start"
        return server.started

    try:
        wait_for(started, 30, "the server to start")
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
