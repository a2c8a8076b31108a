"""One process of a channel, from its spawn to its exit.

It is spawned through the pool, its output is spliced onto the channel's timeline as
fast as the work-ahead takes it, and it is waited for. What its end means (the item
played, the item is skipped, the process crashed) is the supervisor's call
(service/runner.py), made from the `Ended` this returns.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext

from service.clock import Clock
from service.playout import Gap, ItemPlan
from service.pool import ProcessPool
from service.process import ManagedProcess
from service.timeline import Timeline

READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Ended:
    """How a process ended: its exit code, the frames it gave (at least 1 once anything
    went out), the last lines of its stderr, and whether it was killed as stalled
    (the health verdict's span) or replaced on request."""

    code: int
    produced: int
    tail: str
    stalled: SpanContext | None
    replaced: bool


class ProcessRun:
    def __init__(
        self, key: str, plan: ItemPlan | Gap, *, pool: ProcessPool, timeline: Timeline, clock: Clock
    ) -> None:
        self.key = key
        self.plan = plan
        self.kind = "content" if isinstance(plan, ItemPlan) else "slate"
        self.pool = pool
        self.timeline = timeline
        self.clock = clock
        self.process: ManagedProcess | None = None  # while it runs
        self.spawned_at: float | None = None
        self.progress_at: float | None = None  # the process last gave whole frames
        self.waiting_for_room = False  # the work-ahead is full: not owing frames
        self.stalled: SpanContext | None = None
        self.replaced = False

    @property
    def item(self) -> ItemPlan | None:
        return self.plan if isinstance(self.plan, ItemPlan) else None

    def since_progress(self, now: float) -> float | None:
        """Seconds the live process has been expected to give frames and has not."""
        if self.process is None or self.progress_at is None or self.waiting_for_room:
            return None
        return now - self.progress_at

    def kill_stalled(self, cause: SpanContext | None) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        self.stalled = cause
        proc.signal_group(signal.SIGKILL)

    def replace(self) -> bool:
        """End the process as planned (an operator restart, a slate giving way to
        content): the next one resumes where the timeline is. False if none runs."""
        proc = self.process
        if proc is None:
            return False
        self.replaced = True
        proc.signal_group(signal.SIGTERM)
        return True

    async def play(
        self,
        argv: list[str],
        parent: Span | None,
        *,
        on_spawned: Callable[[ManagedProcess], None],
        on_output: Callable[[], None],
    ) -> Ended:
        """Spawn (as a child of `parent`), pump, wait. Pool errors propagate; the
        timeline is cut at the last whole frame unless the process played to its end."""
        splicer = self.timeline.splicer
        completed = False
        try:
            async with contextlib.AsyncExitStack() as scope:
                with trace.use_span(parent or trace.INVALID_SPAN, end_on_exit=False):
                    proc = await scope.enter_async_context(self.pool.spawn(self.key, argv))
                scope.callback(self._exited)
                self.process = proc
                self.spawned_at = self.progress_at = self.clock()
                splicer.begin()
                before = splicer.frames
                on_spawned(proc)
                produced = await self._pump(proc, on_output)
                code = await proc.wait()
                tail = " | ".join(list(proc.stderr_tail)[-3:])
                if code == 0 and self.stalled is None and not self.replaced:
                    self.timeline.push(splicer.end(), self.kind)
                    produced = splicer.frames - before
                    completed = True
                return Ended(code, produced, tail, self.stalled, self.replaced)
        finally:
            if not completed:
                splicer.cut()

    def _exited(self) -> None:
        self.process = None

    async def _pump(self, proc: ManagedProcess, on_output: Callable[[], None]) -> int:
        """Splice the process's output onto the timeline as fast as the work-ahead
        takes it; returns the frames it gave (at least 1 once anything went out)."""
        timeline = self.timeline
        splicer = timeline.splicer
        stdout = proc.stdout
        output = False
        while True:
            if not timeline.has_room():
                self.waiting_for_room = True
                try:
                    await timeline.wait_for_room()
                finally:
                    self.waiting_for_room = False
                    self.progress_at = self.clock()
            data = await stdout.read(READ_SIZE)
            if not data:
                break
            chunks = splicer.feed(data)
            if not chunks:
                continue
            timeline.push(chunks, self.kind)
            self.progress_at = self.clock()
            if not output:
                on_output()
            output = True
        return max(splicer.source_frames, int(output))
