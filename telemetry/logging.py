"""Loguru set-up: one JSON object per entry, trace ids from the active span, stdlib intercepted.

Every entry is redacted once, before any sink sees it: stderr (JSON or text) and the log
store get the same text.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger
from opentelemetry import trace

if TYPE_CHECKING:
    from loguru import Message, Record

# loguru's levels, in order: the values of `[server] log_level` and of a log's `level`.
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
LogSink = Callable[[dict[str, Any]], None]
"""Receives each entry as the dict that the JSON line is made of."""

STDLIB_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio")


REDACTED = "[REDACTED]"

# Secrets: values after these markers are replaced before any sink sees them.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;}]+")
_AUTH_HEADER = re.compile(
    r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|digest|token|negotiate)\s+)?"
    r"[^\s\"',;}]+"
)
_KEY_VALUE = re.compile(
    r"(?i)((?:password|passwd|token|secret)[\w.-]*)"
    r"(=|[\"']\s*:\s*[\"']|:\s+)([^\s&\"',;}]+)"
)
# A cheap first pass: most messages have none of these, and skip the substitutions.
_MAYBE_SECRET = re.compile(r"(?i)bearer|authorization|passw|token|secret")
_SECRET_KEY = re.compile(r"(?i)password|passwd|token|secret|authorization|api_?key|cookie")


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text) is None:
        return text
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact_value(value: Any) -> Any:
    """`value` with secrets redacted: in text, and whole values under secret-like keys.
    Other objects become their redacted text, as the JSON line would show them."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_field(str(k), v) for k, v in value.items()}
    return redact(value if isinstance(value, str) else str(value))


def _redact_field(key: str, value: Any) -> Any:
    return REDACTED if value is not None and _secret_key(key) else redact_value(value)


def add_trace_ids(record: Record) -> None:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record["extra"].setdefault("trace_id", format(context.trace_id, "032x"))
        record["extra"].setdefault("span_id", format(context.span_id, "016x"))


def patch(record: Record) -> None:
    """The one patcher: trace ids, then redaction of the message and the extra fields
    (new values, never the caller's objects changed)."""
    add_trace_ids(record)
    record["message"] = redact(record["message"])
    extra = record["extra"]
    for key, value in extra.items():
        extra[key] = _redact_field(key, value)


def entry_of(record: Record) -> dict[str, Any]:
    """The public shape of a log entry (docs/telemetry.md, "Log fields")."""
    extra = dict(record["extra"])
    entry: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="microseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": extra.pop("logger", None) or record["name"],
        "channel": extra.pop("channel", None),
        "trace_id": extra.pop("trace_id", None),
        "span_id": extra.pop("span_id", None),
    }
    if record["exception"] is not None:
        exc_type = record["exception"].type
        extra["exception"] = exc_type.__name__ if exc_type else "Exception"
    entry["extra"] = {k: _plain(v) for k, v in extra.items()}
    return entry


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class _JsonLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, message: Message) -> None:
        self.stream.write(json.dumps(entry_of(message.record), ensure_ascii=False) + "\n")
        self.stream.flush()


class _EntrySink:
    def __init__(self, sink: LogSink) -> None:
        self.sink = sink

    def __call__(self, message: Message) -> None:
        self.sink(entry_of(message.record))


def text_format(record: Record) -> str:
    """One line for people: time, level, where from (the stdlib logger's name for
    uvicorn's and asyncio's lines), the channel when there is one, the message."""
    extra = record["extra"]
    where = "{extra[logger]}" if "logger" in extra else "{name}"
    channel = " channel {extra[channel]}" if extra.get("channel") is not None else ""
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <8}</level> "
        f"<cyan>{where}</cyan>{channel} <level>{{message}}</level>\n{{exception}}"
    )


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
    sinks: Iterable[LogSink] = (),
    enqueue: bool = False,
) -> None:
    """Replace loguru's handlers: stderr (JSON or text) plus `sinks` (e.g. the log store)."""
    logger.remove()
    logger.configure(patcher=patch, extra={"channel": None})
    out = stream if stream is not None else sys.stderr
    if fmt == "json":
        logger.add(_JsonLines(out), level=level, enqueue=enqueue, catch=True)
    else:
        # diagnose=False: a traceback must not print local variables (a token, say).
        logger.add(
            out, level=level, format=text_format, enqueue=enqueue, catch=True, diagnose=False
        )
    for sink in sinks:
        logger.add(_EntrySink(sink), level=level, enqueue=enqueue, catch=True)
    intercept_stdlib(level)


class InterceptHandler(logging.Handler):
    """Send stdlib records (uvicorn, asyncio) to loguru with their logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(logger=record.name).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


def intercept_stdlib(level: str) -> None:
    handler = InterceptHandler()
    logging.basicConfig(handlers=[handler], level=0, force=True)
    for name in STDLIB_LOGGERS:
        std = logging.getLogger(name)
        std.handlers = [handler]
        std.propagate = False
        std.setLevel(level if name != "uvicorn.access" else "WARNING")
