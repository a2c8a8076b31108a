"""The process pool: bounded slots shared by all channels, plus the shared start-up bucket.

`async with pool.spawn(channel, argv) as proc:` waits for a slot and a start-up token
(both bounded by `acquire_timeout`), starts the process in its own session, and on the
way out always ends its whole process group and frees the slot, also on cancellation.
A spawn that fails because the machine is short of resources raises ShortOfResources,
which the runner waits out instead of spending the channel's restart budget.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, Tracer

from service.children import child_environment
from service.clock import Clock
from service.errors import PoolClosed, PoolError, PoolExhausted, ShortOfResources, SpawnFailed
from service.process import ManagedProcess
from service.ratelimit import TokenBucket
from telemetry.metrics import Metrics, trace_exemplar

# A spawn that failed for these is the machine's shortage, which passes, not the channel's.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


class ProcessFactory(Protocol):
    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str]) -> ManagedProcess: ...


class ProcessPool:
    def __init__(
        self,
        capacity: int,
        bucket: TokenBucket,
        metrics: Metrics,
        *,
        acquire_timeout: float = 30.0,
        tracer: Tracer | None = None,
        process_factory: ProcessFactory = ManagedProcess,
        env: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.bucket = bucket
        self.metrics = metrics
        self.acquire_timeout = acquire_timeout
        self.tracer = tracer or trace.get_tracer("exstream")
        self.process_factory = process_factory
        self.env = dict(env) if env is not None else child_environment(os.environ)
        self.clock = clock
        self.in_use = 0
        self.closed = False
        self._slots = asyncio.Semaphore(capacity)
        self._processes: set[ManagedProcess] = set()
        metrics.pool_capacity.set(capacity)
        # Read at scrape time, so they are never stale between events.
        metrics.pool_processes.set_function(lambda: self.in_use)
        metrics.ratelimit_tokens.set_function(lambda: bucket.tokens)

    @asynccontextmanager
    async def spawn(self, channel: str, argv: Sequence[str]) -> AsyncIterator[ManagedProcess]:
        await self._acquire(channel)
        try:
            proc = await self._start(channel, argv)
            self._processes.add(proc)
            try:
                yield proc
            finally:
                self._processes.discard(proc)
                await proc.__aexit__(None, None, None)
        finally:
            self.in_use -= 1
            self._slots.release()

    async def _acquire(self, channel: str) -> None:
        started = self.clock()
        attributes = {"exstream.channel": channel}
        with self.tracer.start_as_current_span("pool.acquire", attributes=attributes) as span:
            try:
                if self.closed:
                    raise PoolClosed()
                try:
                    async with asyncio.timeout(self.acquire_timeout):
                        await self._slots.acquire()
                except TimeoutError:
                    raise PoolExhausted(self.capacity, self.clock() - started) from None
                if self.closed:
                    self._slots.release()
                    raise PoolClosed()
                try:
                    await self._wait_for_token(channel, started)
                except BaseException:
                    self._slots.release()
                    raise
            except PoolError as exc:
                self.metrics.pool_acquire_failures.labels(reason=exc.reason).inc()
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("exstream.reason", exc.reason)
                raise
            self.in_use += 1
            self.metrics.pool_acquire_duration.observe(
                self.clock() - started, exemplar=trace_exemplar()
            )

    async def _wait_for_token(self, channel: str, started: float) -> None:
        attributes = {"exstream.channel": channel}
        with self.tracer.start_as_current_span("ratelimit.wait", attributes=attributes) as span:
            remaining = max(0.0, self.acquire_timeout - (self.clock() - started))
            waited = await self.bucket.acquire(timeout=remaining)
            span.set_attribute("exstream.waited_seconds", waited)
            self.metrics.ratelimit_wait.observe(waited, exemplar=trace_exemplar())

    async def _start(self, channel: str, argv: Sequence[str]) -> ManagedProcess:
        attributes = {"exstream.channel": channel, "process.executable.name": argv[0]}
        with self.tracer.start_as_current_span("ffmpeg.spawn", attributes=attributes) as span:
            proc = self.process_factory(argv, env=self.env)
            try:
                await proc.start()
            except OSError as exc:
                kind = ShortOfResources if exc.errno in RESOURCE_ERRNOS else SpawnFailed
                error = kind(argv[0], exc.strerror or str(exc))
                self.metrics.pool_acquire_failures.labels(reason=error.reason).inc()
                span.set_status(Status(StatusCode.ERROR, str(error)))
                raise error from None
            span.set_attribute("process.pid", proc.pid or 0)
            return proc

    async def close(self) -> None:
        """Refuse new spawns and end every process still running."""
        self.closed = True
        await asyncio.gather(*(p.terminate() for p in list(self._processes)))
