"""`/metrics` as a real Prometheus sees it, from a real exstream process."""

from __future__ import annotations

import functools
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry

from telemetry.metrics import Metrics, MetricsEndpoint, trace_exemplar
from tests.harness.config import write_config
from tests.harness.network import free_port
from tests.harness.processes import running
from tests.harness.server import Server, run_server
from tests.polling import wait_for
from tests.telemetry.test_catalogue import catalogue_metrics, exposed_names

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs the Debian prometheus package (make setup installs it)",
)


T = TypeVar("T")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


# Prometheus and exstream are other processes: poll them gently, for up to a minute.
HTTP_POLL_INTERVAL = 0.2


def wait_for_http(check: Callable[[], T | None], what: str) -> T:
    return wait_for(check, 60, what, HTTP_POLL_INTERVAL, ignore=(httpx.HTTPError,))


@pytest.fixture
def exstream(
    tmp_path: Path,
    standin: Callable[[str], Path],
    otlp_receiver: tuple[str, list[tuple[str, bytes]]],
) -> Iterator[Server]:
    """`exstream serve` with a streaming stand-in for ffmpeg and OTLP export to a receiver."""
    (tmp_path / "media").mkdir()
    config = write_config(
        tmp_path,
        [{"number": 1, "name": "Always", "media": [str(tmp_path / "media")], "mode": "always_on"}],
        server={"graceful_shutdown": 2},
        ffmpeg={"ffmpeg": str(standin("ok"))},
        health={"backoff_initial": 1, "backoff_max": 1},
    )
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver[0],
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with run_server(config, env, log_level="INFO") as server:
        yield server


@pytest.fixture
def prometheus(tmp_path: Path, exstream: Server) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: exstream
    static_configs:
      - targets: ["127.0.0.1:{exstream.port}"]
""",
        encoding="utf-8",
    )
    argv = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
    ]
    with running(argv, tmp_path / "prometheus.log", stop_timeout=30):
        yield f"http://127.0.0.1:{port}"


def query(prometheus: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{prometheus}{path}", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def test_a_real_prometheus_sees_the_whole_catalogue_with_exemplars(
    exstream: Server,
    prometheus: str,
    otlp_receiver: tuple[str, list[tuple[str, bytes]]],
) -> None:
    base, proc = exstream.base_url, exstream.process
    # Some traced requests, so HTTP latency has exemplars too.
    for _ in range(3):
        assert httpx.get(f"{base}/api/channels").status_code == 200

    catalogue = catalogue_metrics()
    expected = {m.name for m in catalogue}
    always = {m.name for m in catalogue if m.series == "start"}
    # After traffic, only the log ids metric (another feature's errors) may be missing, and
    # the peers' gauge, which only members of a cluster export (tests/e2e/test_cluster.py).
    wanted = expected - {"exstream_logs_invalid_id_total", "exstream_cluster_peer_up"}

    def scraped() -> set[str] | None:
        names = set(query(prometheus, "/api/v1/label/__name__/values"))
        present = {m.name for m in catalogue if exposed_names(m) <= names}
        return present if present >= wanted else None

    present = wait_for_http(scraped, "every catalogue metric in Prometheus")
    assert always <= present <= expected
    up = query(prometheus, "/api/v1/query", query='up{job="exstream"}')
    assert [r["value"][1] for r in up["result"]] == ["1"]

    def exemplars(metric: str) -> list[dict[str, Any]] | None:
        now = time.time()
        data = query(
            prometheus,
            "/api/v1/query_exemplars",
            query=metric,
            start=str(now - 600),
            end=str(now + 60),
        )
        found = [e for series in data for e in series["exemplars"]]
        return found or None

    for metric in (
        "exstream_pool_acquire_duration_seconds_bucket",
        "exstream_ratelimit_wait_seconds_bucket",
        "exstream_http_request_duration_seconds_bucket",
    ):
        found = wait_for_http(functools.partial(exemplars, metric), f"exemplars of {metric}")
        assert all(re.fullmatch(r"[0-9a-f]{32}", e["labels"]["trace_id"]) for e in found)

    # The plain text exposition is clean for promtool.
    text = httpx.get(f"{base}/metrics").text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")

    # The exemplar trace ids are those of exported traces (flushed at exit).
    proc.send_signal(signal.SIGTERM)
    # uvicorn ends by the signal it caught, after the flush.
    assert proc.wait(30) == -signal.SIGTERM
    _, bodies = otlp_receiver
    names: set[str] = set()
    trace_ids: set[str] = set()
    for _, body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope in resource_spans.scope_spans:
                names.update(s.name for s in scope.spans)
                trace_ids.update(s.trace_id.hex() for s in scope.spans)
    assert {"media.scan", "playout.rebuild", "channel.start", "pool.acquire"} <= names
    assert {"ratelimit.wait", "ffmpeg.spawn", "channel.first_output"} <= names
    assert "GET /api/channels" in names
    acquire = wait_for_http(
        lambda: exemplars("exstream_pool_acquire_duration_seconds_bucket"), "exemplars"
    )
    assert {e["labels"]["trace_id"] for e in acquire} <= trace_ids


async def test_exemplars_only_for_sampled_spans_and_only_in_openmetrics() -> None:

    metrics = Metrics(CollectorRegistry())
    assert trace_exemplar() is None
    sampled = TracerProvider().get_tracer("t")
    with sampled.start_as_current_span("pool.acquire") as span:
        exemplar = trace_exemplar()
        metrics.pool_acquire_duration.observe(0.2, exemplar=exemplar)
    assert exemplar == {"trace_id": format(span.get_span_context().trace_id, "032x")}
    with TracerProvider(sampler=ALWAYS_OFF).get_tracer("t").start_as_current_span("x"):
        assert trace.get_current_span().get_span_context().is_valid
        assert trace_exemplar() is None
    # /metrics negotiates: exemplars only for a scraper that asks for OpenMetrics.
    transport = httpx.ASGITransport(app=MetricsEndpoint(metrics.registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://exstream") as client:
        plain = await client.get("/metrics")
        rich = await client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert rich.headers["content-type"].startswith("application/openmetrics-text")
    assert f'# {{trace_id="{exemplar["trace_id"]}"}} 0.2' in rich.text
    assert plain.headers["content-type"].startswith("text/plain")
    assert "exstream_pool_acquire_duration_seconds_bucket" in plain.text
    assert "trace_id" not in plain.text


def test_process_metrics_come_from_the_injected_registry_without_created_series() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.add_channel("1")
    samples = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert {"process_open_fds", "process_max_fds", "process_resident_memory_bytes"} <= samples
    assert {"process_cpu_seconds_total", "python_info"} <= samples
    assert not [name for name in samples if name.endswith("_created")]
