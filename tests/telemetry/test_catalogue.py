"""docs/telemetry.md against what the code registers and emits, both ways."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from telemetry.logging import configure_logging
from telemetry.metrics import Metrics

# These tests configure loguru for the whole process: its defaults come back after each.
pytestmark = pytest.mark.usefixtures("quiet_logs")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "telemetry.md"
HTTP_SPAN = "{method} {route}"
SPAN_CALL = re.compile(r"""(?:start_as_current_span|start_span|_span)\(\s*["']([a-z_.]+)["']""")


@dataclass(frozen=True)
class DocMetric:
    name: str
    type: str
    labels: tuple[str, ...]
    unit: str
    series: str


@dataclass(frozen=True)
class DocSpan:
    name: str
    attributes: frozenset[str]


def _section(title: str) -> list[list[str]]:
    """The rows of the first table under `## title`, as lists of cells."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def catalogue_metrics() -> list[DocMetric]:
    metrics = []
    for name, kind, labels, unit, series, _ in _section("Metrics"):
        (metric,) = _names(name)
        label_names = () if labels == "-" else tuple(x.strip() for x in labels.split(","))
        metrics.append(DocMetric(metric, kind, label_names, unit, series))
    return metrics


def catalogue_spans() -> list[DocSpan]:
    spans = []
    for name, _, _, attributes, _ in _section("Spans"):
        (span,) = _names(name)
        spans.append(DocSpan(span, frozenset(_names(attributes))))
    return spans


def catalogue_log_fields() -> list[str]:
    return [_names(row[0])[0] for row in _section("Log fields")]


def exposed_names(metric: DocMetric) -> set[str]:
    """The sample names Prometheus stores for a catalogue metric."""
    if metric.type == "histogram":
        return {f"{metric.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return {metric.name}


def registered() -> dict[str, DocMetric]:
    metrics = Metrics(CollectorRegistry())
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            unit = next((u for u in ("seconds", "bytes") if f"_{u}" in name), "-")
            labels = tuple(value._labelnames)
            found[name] = DocMetric(name, family.type, labels, unit, "")
    return found


def test_metrics_match_the_registry_both_ways() -> None:
    documented = {m.name: m for m in catalogue_metrics()}
    code = registered()
    assert sorted(documented) == sorted(code)
    for name, metric in documented.items():
        assert (metric.type, metric.labels, metric.unit) == (
            code[name].type,
            code[name].labels,
            code[name].unit,
        ), name
        assert metric.series in ("start", "first event"), name


def test_series_marked_start_exist_once_a_channel_is_added() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.add_channel("1")
    samples = {s.name for family in metrics.registry.collect() for s in family.samples}
    for metric in catalogue_metrics():
        present = exposed_names(metric) <= samples
        # Histograms with labels have no series before a first observation.
        expected = metric.series == "start"
        assert present == expected, metric.name


def code_span_names() -> set[str]:
    names = set()
    for path in (ROOT / "service").rglob("*.py"):
        names.update(SPAN_CALL.findall(path.read_text(encoding="utf-8")))
    return names


def test_spans_match_the_code_both_ways() -> None:
    documented = {s.name for s in catalogue_spans()} - {HTTP_SPAN}
    assert HTTP_SPAN in {s.name for s in catalogue_spans()}
    assert documented == code_span_names()


def assert_documented(spans: Iterable[ReadableSpan]) -> None:
    """Every recorded span and its exstream/process attributes are in the catalogue."""
    catalogue = {s.name: s.attributes for s in catalogue_spans()}
    for span in spans:
        name = span.name if span.name in catalogue else HTTP_SPAN
        if name == HTTP_SPAN:
            assert span.attributes is not None and "http.route" in span.attributes, span.name
        ours = {k for k in span.attributes or {} if k.startswith(("exstream.", "process."))}
        assert ours <= catalogue[name], (span.name, ours - catalogue[name])


def test_log_fields_match_the_entries_both_ways() -> None:
    entries: list[dict[str, Any]] = []
    configure_logging("INFO", "json", stream=io.StringIO(), sinks=[entries.append])
    try:
        logger.bind(channel="3").info("hello", reason="test")
    finally:
        logger.remove()
    (entry,) = entries
    assert list(entry) == catalogue_log_fields()
    assert entry["extra"] == {"reason": "test"}
