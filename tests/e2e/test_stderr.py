"""A stderr nobody reads (a stuck log collector, a paused terminal, a pipe whose reader
hangs) must not stop the stream: lines wait in a bounded queue or are dropped, counted."""

from __future__ import annotations

import os
import time

from tests.e2e.wire import worst_gap
from tests.harness.server import run_server
from tests.harness.standin import StandInFactory
from tests.harness.viewer import Viewer
from tests.polling import wait_for

REQUESTS = 3000  # one access-log line each: several times what a pipe holds (64 KiB)


def test_a_stderr_nobody_reads_never_stops_the_stream(stand_in: StandInFactory) -> None:
    config, env, _ = stand_in(server={"access_log": True})
    read_end, write_end = os.pipe()  # the server's stderr: never read
    try:
        with run_server(config, env, output=write_end) as server:
            os.close(write_end)
            write_end = -1
            viewer = Viewer(server, 1)
            viewer.start()
            try:
                wait_for(lambda: len(viewer.arrivals) > 5, 30, "the viewer's data")
                started = time.monotonic()
                with server.client(timeout=5) as client:
                    for _ in range(REQUESTS):
                        assert client.get("/healthz").status_code == 200
                served = time.monotonic() - started
                wait_for(lambda: viewer.seconds() > served + 2, 30, "more stream")
            finally:
                viewer.finish()
            during = viewer.since(started)
            assert sum(n for _, n in during) > 0
            assert worst_gap(during) < 1.0, worst_gap(during)
            # Every line is still in the log store, as an operator would look for it.
            with server.client() as client:
                response = client.get(
                    "/api/logs/entries", params={"q": "GET /healthz", "limit": 1000}
                )
            assert response.status_code == 200, response.text
            assert len(response.json()["entries"]) == 1000
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
