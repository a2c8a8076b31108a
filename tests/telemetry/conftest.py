from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from service.app import create_app
from service.config import Settings, load_settings
from telemetry.logging import STDLIB_LOGGERS, configure_logging
from tests.harness.config import write_config
from tests.harness.receiver import receiving
from tests.harness.standin import write_stand_in

# Twenty PATs a second (each with 20 null packets the service drops): telemetry tests
# watch spans and logs, not throughput.
STAND_IN_RATE = 20 * 21 * 188


@pytest.fixture
def standin(tmp_path: Path) -> Callable[[str], Path]:
    """`standin(behaviour)`: an ffmpeg for channel 1 that behaves so on every spawn (see
    tests/harness/fake_ffmpeg.py), writing PAT and null packets."""

    def make(behaviour: str) -> Path:
        path = tmp_path / f"ffmpeg-{behaviour}"
        return write_stand_in(path, plan={"1": behaviour}, rate=STAND_IN_RATE)

    return make


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one channel whose ffmpeg is `ffmpeg`; more sections may be given."""

    def make(ffmpeg: Path, *, mode: str = "always_on", **sections: dict[str, Any]) -> Settings:
        (tmp_path / "media").mkdir(exist_ok=True)
        config = write_config(
            tmp_path,
            [{"number": 1, "name": "Test", "media": ["media"], "mode": mode}],
            encoding={},
            server={"port": 0, "data_dir": "data", "graceful_shutdown": 2},
            ffmpeg={"ffmpeg": str(ffmpeg)},
            **sections,
        )
        return load_settings(config, {})

    return make


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def exporter(spans: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    """The finished spans of the `spans` provider."""
    return spans[1]


TracedApp = Callable[..., Starlette]


@pytest.fixture
def traced_app(
    standin: Callable[[str], Path],
    make_settings: Callable[..., Settings],
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> TracedApp:
    """`make(behaviour, **settings)`: an app whose ffmpeg is the stand-in behaving so
    (see `standin`), traced into the `spans` exporter; settings as for `make_settings`
    (whose `mode` is the channel's)."""
    provider, _ = spans

    def make(behaviour: str, /, **settings: Any) -> Starlette:
        return create_app(
            make_settings(standin(behaviour), **settings),
            registry=CollectorRegistry(),
            tracer_provider=provider,
        )

    return make


@pytest.fixture
def log_entries() -> Iterator[list[dict[str, Any]]]:
    entries: list[dict[str, Any]] = []
    configure_logging("DEBUG", "json", stream=io.StringIO(), sinks=[entries.append])
    yield entries
    logger.remove()
    logger.configure(patcher=None, extra={})
    logger.add(sys.stderr)
    for name in STDLIB_LOGGERS:
        std = logging.getLogger(name)
        std.handlers = []
        std.propagate = True
    logging.root.handlers = []


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP endpoint: its URL, and (path, body) of every export it received."""
    with receiving() as receiver:
        yield receiver.url, receiver.bodies
