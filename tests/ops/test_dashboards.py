"""The dashboards as code: generated, with a datasource and channel variable, units and
`$__rate_interval` everywhere; test_stack.py runs every query against Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.generate import DASHBOARDS, WORKAHEAD_DEFAULT, render
from service.config import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "dashboards"
RANGE_FUNCTIONS = re.compile(r"\b(rate|increase|irate|delta|[a-z]+_over_time)\(([^()]*)\)")
METRIC = re.compile(r"\b(exstream(?::[a-z0-9_]+)+|exstream_[a-z0-9_]+|up)\b")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARD_DIR / name).read_text(encoding="utf-8"))
    return data


def panels(name: str) -> list[dict[str, Any]]:
    return list(load(name)["panels"])


def dashboard_targets() -> Iterator[tuple[str, str, str]]:
    for name in DASHBOARDS:
        for panel in panels(name):
            for target in panel["targets"]:
                yield name, panel["title"], target["expr"]


def substitute(expr: str, *, channels: str, range_seconds: float) -> str:
    """Grafana's variables as Grafana would fill them for a 1 s scrape interval (and the
    default of the `workahead` text variable)."""
    return (
        expr.replace("$__rate_interval", "4s")
        .replace("$__interval", "1s")
        .replace("$__range", f"{max(1, round(range_seconds))}s")
        .replace("$channel", f"({channels})")
        .replace("$workahead", WORKAHEAD_DEFAULT)
    )


def test_committed_json_is_what_the_generator_writes() -> None:
    for name, text in render().items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == text, (
            f"dashboards/{name} is stale: run python dashboards/generate.py"
        )


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_variables(name: str) -> None:
    dashboard = load(name)
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    channel = variables["channel"]
    assert channel["query"]["query"] == "label_values(exstream_channel_up, channel)"
    assert channel["datasource"]["uid"] == "${datasource}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_variable_a_query_uses_is_declared() -> None:
    builtin = {"__rate_interval", "__interval", "__range"}
    for name in DASHBOARDS:
        dashboard = load(name)
        declared = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - builtin
                assert used <= declared, f"{name} / {panel['title']}: {used - declared}"


def test_work_ahead_panels_show_the_configured_value() -> None:
    assert float(WORKAHEAD_DEFAULT) == StreamSettings().workahead
    for name in ("channels.json", "cascade.json"):
        dashboard = load(name)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["workahead"]["query"] == WORKAHEAD_DEFAULT
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        assert any("exstream_channel_workahead_seconds" in e for e in exprs), name
        assert "vector($workahead)" in exprs, name


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_has_a_unit_and_the_datasource_variable(name: str) -> None:
    for panel in panels(name):
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_range_function_uses_rate_interval(name: str) -> None:
    for panel in panels(name):
        for target in panel["targets"]:
            calls = RANGE_FUNCTIONS.findall(target["expr"])
            for function, argument in calls:
                assert argument.endswith("[$__rate_interval]"), (
                    f"{panel['title']}: {function}({argument})"
                )


def test_channel_panels_filter_by_the_channel_variable() -> None:
    for name in DASHBOARDS:
        for panel in panels(name):
            for target in panel["targets"]:
                expr = target["expr"]
                per_channel = (
                    re.search(r"by \([^)]*channel", expr)
                    or "{{channel}}" in (target["legendFormat"])
                )
                if per_channel:
                    assert 'channel=~"$channel"' in expr, f"{panel['title']}: {expr}"


def test_acquire_latency_heatmap_has_exemplars_linked_to_traces() -> None:
    heatmaps = [p for p in panels("cascade.json") if p["type"] == "heatmap"]
    assert [p["title"] for p in heatmaps] == ["Pool acquire latency"]
    target = heatmaps[0]["targets"][0]
    assert target["exemplar"] is True
    assert target["format"] == "heatmap"
    assert "exstream_pool_acquire_duration_seconds_bucket" in target["expr"]
    datasources = (DASHBOARD_DIR / "provisioning" / "datasources" / "datasources.yml").read_text(
        encoding="utf-8"
    )
    config = yaml.safe_load(datasources)
    by_uid = {d["uid"]: d for d in config["datasources"]}
    links = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert links == [
        {"name": "trace_id", "datasourceUid": "tempo", "urlDisplayLabel": "Open trace"}
    ]
    assert by_uid[links[0]["datasourceUid"]]["type"] in ("tempo", "jaeger")


def test_dashboards_use_only_catalogued_metrics_and_recorded_series() -> None:
    from tests.ops.test_rules import catalogue, recorded_series

    known = catalogue() | recorded_series()
    for name, title, expr in dashboard_targets():
        for metric in METRIC.findall(expr):
            assert metric in known or metric == "up", f"{name} / {title}: unknown {metric}"
