from __future__ import annotations

import io
import json
import logging
from typing import Any

from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

from telemetry.logging import configure_logging


def test_entries_carry_the_active_span_also_through_the_queue_and_from_stdlib(
    log_entries: list[dict[str, Any]],
) -> None:
    stream = io.StringIO()
    sink: list[dict[str, Any]] = []
    # As `serve` does: the sinks run on loguru's worker thread, never the event loop.
    configure_logging("INFO", "json", stream=stream, sinks=[sink.append], enqueue=True)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("channel.restart") as span:
        logger.bind(channel="4").info("inside {}", "span", attempt=2)
        logging.getLogger("uvicorn.error").warning("from %s", "uvicorn")
    logger.info("outside")
    logger.complete()
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
