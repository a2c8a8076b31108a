"""Loguru set-up: one JSON object per entry, trace ids from the active span, stdlib intercepted.

Every entry is redacted once, before any sink sees it: stderr (JSON or text) and the log
store get the same text.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import re
import sys
import threading
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
"""Receives each entry as the dict that the JSON line is made of; called by the thread
that logs (the event loop's, mostly), so it must not block: the log store's queues."""
OnDrop = Callable[[str], None]
"""Told the reason (`queue_full`, `write_failed`) of each line stderr did not get."""
STDERR_QUEUE = 10_000  # lines waiting for stderr; a few MB at most

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


class LineWriter:
    """Writes lines to a stream from a thread of its own, through a bounded queue.

    A stream that stops taking lines (a pipe nobody reads, a stuck terminal, a paused
    log collector) costs dropped lines, counted through `on_drop`, and never blocks the
    thread that logs, which is the event loop that serves the viewers. Once the stream
    takes lines again, one WARNING says how many it missed.
    """

    def __init__(
        self, stream: TextIO, *, capacity: int = STDERR_QUEUE, on_drop: OnDrop | None = None
    ) -> None:
        self.stream = stream
        self._queue: queue.Queue[str | threading.Event] = queue.Queue(capacity)
        self._on_drop = on_drop
        self._dropped = 0  # since the last notice; counted by both threads
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-stderr", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._drop("queue_full")

    def flush(self, timeout: float) -> bool:
        """Wait, at most `timeout` seconds, until the lines queued so far are written."""
        written = threading.Event()
        try:
            self._queue.put(written, timeout=timeout)
        except queue.Full:
            return False
        return written.wait(timeout)

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._dropped += 1
        if self._on_drop is not None:
            self._on_drop(reason)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self.stream.write(item)
                self.stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing to tell it with
                self._drop("write_failed")
                continue
            if self._dropped and self._queue.qsize() < self._queue.maxsize // 2:
                with self._lock:
                    missed, self._dropped = self._dropped, 0
                logger.warning(
                    "{} log line(s) were not written to stderr: it was not taking them "
                    "(every entry is also in the log store)", missed, dropped=missed,
                )  # fmt: skip


def _json_line(record: Record) -> str:
    return json.dumps(entry_of(record), ensure_ascii=False) + "\n"


class _JsonLines:
    # No attribute named `write`: loguru would take the sink for a stream.
    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def __call__(self, message: Message) -> None:
        self._write(_json_line(message.record))


class _Lines:
    """A sink of formatted text lines (loguru's `format` applied) to `write`."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def __call__(self, message: Message) -> None:
        self._write(str(message))


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


_writers: list[LineWriter] = []  # the one behind stderr, when it writes from a thread


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
    sinks: Iterable[LogSink] = (),
    background: bool = False,
    on_drop: OnDrop | None = None,
) -> None:
    """Replace loguru's handlers: stderr (JSON or text) plus `sinks` (e.g. the log store).

    With `background`, stderr is written by a LineWriter (bounded, drops rather than
    blocks; `on_drop` counts); `flush_logging` waits for it.
    """
    logger.remove()
    _writers.clear()
    logger.configure(patcher=patch, extra={"channel": None})
    out = stream if stream is not None else sys.stderr
    write: Callable[[str], None] = _write_to(out)
    if background:
        writer = LineWriter(out, on_drop=on_drop)
        _writers.append(writer)
        write = writer
    if fmt == "json":
        logger.add(_JsonLines(write), level=level, catch=True)
    else:
        # diagnose=False: a traceback must not print local variables (a token, say).
        colorize = out.isatty() if hasattr(out, "isatty") else False
        logger.add(
            _Lines(write), level=level, format=text_format, colorize=colorize, catch=True,
            diagnose=False,
        )  # fmt: skip
    for sink in sinks:
        logger.add(_EntrySink(sink), level=level, catch=True)
    intercept_stdlib(level)


def _write_to(stream: TextIO) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line)
        stream.flush()

    return write


def flush_logging(timeout: float) -> bool:
    """Wait, at most `timeout` seconds, until every line logged so far is on stderr;
    False if stderr did not take them in time (a stalled pipe: shutdown goes on)."""
    return all(writer.flush(timeout) for writer in list(_writers))


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
        # uvicorn.access too: uvicorn's Config(access_log=False) takes its handler away.
        std.setLevel(level)
