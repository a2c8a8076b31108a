"""`GET /stream/{number}.ts`: one viewer's MPEG-TS over HTTP.

`HEAD` answers with the headers a viewer would get, and starts nothing: players and
tuner clients ask before they watch.

The response is a plain ASGI loop, not StreamingResponse: nothing runs per chunk but the
send itself. A viewer that stops reading is dropped after `send_timeout`; one that
falls out of the channel's buffer is dropped at its next read. A dropped viewer's
connection is aborted (the server's `exstream.abort` extension): closing it would keep
its socket and unsent bytes until the client leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from loguru import logger
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.hub import Subscription, ViewerDropped
from service.protocol import ABORT_EXTENSION
from service.types import AppState, app_state
from telemetry.metrics import Metrics

# Reasons a viewer is dropped for not reading fast enough: its unsent bytes are dropped too.
NOT_READING = frozenset({"slow", "send_timeout"})
# How long an aborted connection may take to report its disconnect.
DISCONNECT_WAIT = 1.0
STREAM_HEADERS = {"Cache-Control": "no-cache, no-store", "X-Content-Type-Options": "nosniff"}


class TransportStreamResponse(Response):
    media_type = "video/mp2t"

    def __init__(
        self,
        watch: AbstractAsyncContextManager[Subscription],
        subscription: Subscription,
        *,
        channel: str,
        send_timeout: float,
        metrics: Metrics,
    ) -> None:
        super().__init__(headers=STREAM_HEADERS, media_type=self.media_type)
        del self.headers["content-length"]
        self.watch = watch
        self.subscription = subscription
        self.channel = channel
        self.send_timeout = send_timeout
        self.metrics = metrics
        self.sent = 0
        self.reason = "ended"
        self.sending_since: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        log = logger.bind(channel=self.channel)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            # The start point (PAT/PMT + GOP) goes out now, not one loop turn later in the
            # pump: under load each turn can wait behind a fan-out burst. A fresh
            # connection's transport is not paused, so this send does not block.
            first = self.subscription.take_start()
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                self.sent += len(first)
            await self._serve(receive, send, _abort_of(scope))
        finally:
            await self.watch.__aexit__(None, None, None)
            self._annotate_span()
            log.info(
                "viewer of channel {} left after {:.1f}s, {} bytes ({})",
                self.channel, time.monotonic() - started, self.sent, self.reason,
                bytes_sent=self.sent, reason=self.reason,
            )  # fmt: skip

    async def _serve(self, receive: Receive, send: Send, abort: Callable[[], None] | None) -> None:
        pump = asyncio.create_task(self._pump(send))
        listen = asyncio.create_task(_wait_for_disconnect(receive))
        watchdog = _SendWatchdog(self, pump)
        try:
            done, _ = await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
            watchdog.stop()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if watchdog.fired:
                self.reason = "send_timeout"
            elif listen in done:
                self.reason = "client_closed"
                return
            if self.reason in NOT_READING and abort is not None:
                abort()
                # uvicorn reports a response that ends unfinished as an error, unless it
                # has seen the disconnect first.
                await asyncio.wait({listen}, timeout=DISCONNECT_WAIT)
            elif not watchdog.fired and pump.result():
                self._annotate_span()  # the last body message ends the span
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watchdog.stop()
            for task in (pump, listen):  # also when this request is cancelled
                task.cancel()

    def _annotate_span(self) -> None:
        # The HTTP server span is current here, and open until the response ends.
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "exstream.channel": self.channel,
                    "exstream.bytes_sent": self.sent,
                    "exstream.reason": self.reason,
                }
            )

    async def _pump(self, send: Send) -> bool:
        """Copy batches until the hub ends or drops this viewer; True: finish the response."""
        sub = self.subscription
        clock = asyncio.get_running_loop().time
        try:
            async for batch in sub.batches():
                # No timer per send (most return at once): _SendWatchdog checks this mark.
                self.sending_since = clock()
                await send({"type": "http.response.body", "body": batch, "more_body": True})
                self.sending_since = None
                self.sent += len(batch)
        except ViewerDropped as exc:
            self.reason = exc.reason
            return True
        self.reason = "channel_closed"
        return True


class _SendWatchdog:
    """Cancels the pump when one send has waited `send_timeout`: one timer per viewer
    per `send_timeout`, instead of arming and cancelling one per chunk."""

    def __init__(self, response: TransportStreamResponse, pump: asyncio.Task[bool]) -> None:
        self.response = response
        self.pump = pump
        self.fired = False
        self.loop = asyncio.get_running_loop()
        self.handle = self.loop.call_later(response.send_timeout, self.check)

    def check(self) -> None:
        response = self.response
        since = response.sending_since
        wait = response.send_timeout if since is None else since + response.send_timeout
        if since is not None:
            wait -= self.loop.time()
            if wait <= 0:
                self.fired = True
                response.subscription.drop("send_timeout")
                self.pump.cancel()
                return
        self.handle = self.loop.call_later(wait, self.check)

    def stop(self) -> None:
        self.handle.cancel()


def _abort_of(scope: Scope) -> Callable[[], None] | None:
    abort: Callable[[], None] | None = (
        scope.get("extensions", {}).get(ABORT_EXTENSION, {}).get("abort")
    )
    return abort


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stream(request: Request) -> Response:
    state = app_state(request)
    number: int = request.path_params["number"]
    if request.method == "HEAD":
        return _headers_only(state, number)
    watch = state.channels.watch(number)
    subscription = await watch.__aenter__()
    return TransportStreamResponse(
        watch,
        subscription,
        channel=str(number),
        send_timeout=state.settings.stream.send_timeout,
        metrics=state.metrics,
    )


def _headers_only(state: AppState, number: int) -> Response:
    """What GET would answer, without its body: the refusals GET makes before starting
    the channel, else the stream's headers."""
    state.channels.admit(number)
    response = Response(headers=STREAM_HEADERS, media_type=TransportStreamResponse.media_type)
    del response.headers["content-length"]  # an endless body has none
    return response
