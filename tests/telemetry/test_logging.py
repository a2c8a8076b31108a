from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any

import pytest
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

from telemetry.logging import STDERR_QUEUE, configure_logging, flush_logging

# These tests configure loguru for the whole process: its defaults come back after each.
pytestmark = pytest.mark.usefixtures("quiet_logs")


def test_entries_carry_the_active_span_also_through_the_queue_and_from_stdlib(
    log_entries: list[dict[str, Any]],
) -> None:
    stream = io.StringIO()
    sink: list[dict[str, Any]] = []
    # As `serve` does: the sinks run on loguru's worker thread, never the event loop.
    configure_logging("INFO", "json", stream=stream, sinks=[sink.append], background=True)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("channel.restart") as span:
        logger.bind(channel="4").info("inside {}", "span", attempt=2)
        logging.getLogger("uvicorn.error").warning("from %s", "uvicorn")
    logger.info("outside")
    assert flush_logging(5)
    logger.remove()  # waits for the queue to drain

    context = span.get_span_context()
    ids = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == sink
    inside, stdlib, outside = sink
    assert (inside["trace_id"], inside["span_id"]) == ids
    assert inside["channel"] == "4" and inside["message"] == "inside span"
    assert inside["extra"] == {"attempt": 2}
    assert (stdlib["trace_id"], stdlib["span_id"]) == ids
    assert stdlib["logger"] == "uvicorn.error" and stdlib["level"] == "WARNING"
    assert outside["trace_id"] is None and outside["span_id"] is None


def test_text_format_is_for_people(log_entries: list[dict[str, Any]]) -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "text", stream=stream)
    logger.info("not shown")
    logger.bind(channel="9").warning("shown {braces}")
    logging.getLogger("uvicorn.error").warning("from uvicorn")
    logger.remove()
    mine, uvicorn = stream.getvalue().splitlines()
    assert "WARNING" in mine and mine.endswith("channel 9 shown {braces}")
    assert not mine.startswith("{")
    # The stdlib logger's name, not the module that forwards its lines; no "None" channel.
    assert uvicorn.endswith(" uvicorn.error from uvicorn"), uvicorn
    assert "None" not in uvicorn and "telemetry.logging" not in uvicorn


class StalledStream(io.StringIO):
    """A stderr that stops taking lines (a pipe nobody reads) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.released.wait(30)
        return super().write(text)


def test_a_stalled_stderr_costs_dropped_lines_never_a_blocked_caller(
    log_entries: list[dict[str, Any]],
) -> None:
    stream = StalledStream()
    stored: list[dict[str, Any]] = []
    drops: list[str] = []
    configure_logging(
        "INFO", "json", stream=stream, sinks=[stored.append], background=True,
        on_drop=drops.append,
    )  # fmt: skip
    lines = STDERR_QUEUE + 500
    began = time.monotonic()
    for i in range(lines):
        logger.info("line {}", i)
    # The caller went on (no write to the stalled stream was waited for): one line may be
    # in the writer's hands, the queue is full, the rest were dropped and counted.
    assert time.monotonic() - began < 20
    assert len(stored) == lines
    assert drops and set(drops) == {"queue_full"}
    assert len(drops) >= lines - STDERR_QUEUE - 1
    stream.released.set()
    assert flush_logging(10)
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    messages = [entry["message"] for entry in written]
    assert len(messages) - 1 + len(drops) == lines  # one notice added
    notice = written[-1]
    assert notice["level"] == "WARNING" and notice["extra"] == {"dropped": len(drops)}
    assert f"{len(drops)} log line(s) were not written to stderr" in notice["message"]
    logger.remove()


class ClosedStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(32, "Broken pipe")


def test_a_broken_stderr_counts_failed_writes(log_entries: list[dict[str, Any]]) -> None:
    drops: list[str] = []
    configure_logging("INFO", "text", stream=ClosedStream(), background=True, on_drop=drops.append)
    logger.info("one")
    logger.info("two")
    assert flush_logging(10)
    assert drops[:2] == ["write_failed", "write_failed"]
    logger.remove()
