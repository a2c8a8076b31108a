"""The alert rules and Alertmanager config: conventions, runbook links, promtool/amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "exstream.rules.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SEVERITIES = {"critical", "warning", "info"}
METRIC = re.compile(r"\b(exstream(?::[a-z0-9_]+)+|exstream_[a-z0-9_]+)\b")
REQUIRED_ALERTS = {
    "ExstreamChannelStalled",
    "ExstreamChannelNoOutput",
    "ExstreamRestartStorm",
    "ExstreamChannelFailed",
    "ExstreamPoolSaturated",
    "ExstreamPoolAcquireFailures",
    "ExstreamPlayoutHorizonLow",
    "ExstreamWorkaheadLow",
    "ExstreamViewersSeeSlate",
    "ExstreamItemsSkipped",
    "ExstreamHttp5xxRatioHigh",
    "ExstreamEventLoopLagHigh",
    "ExstreamStorageDegraded",
    "ExstreamStorageDamaged",
    "ExstreamLogsDropped",
    "ExstreamConnectionsNearLimit",
    "ExstreamConnectionsRefused",
    "ExstreamOrphansReaped",
    "ExstreamCrossSiteRequests",
    "ExstreamTargetDown",
    "ExstreamWatchdog",
}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_series() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def catalogue() -> set[str]:
    """Every series name the metric catalogue exports (histograms: their three series)."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOKS.read_text(encoding="utf-8")
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_the_required_alerts_exist() -> None:
    assert {a["alert"] for a in alerts()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_alert_conventions(alert: dict[str, Any]) -> None:
    assert re.fullmatch(r"Exstream(?:[A-Z][a-z0-9]*)+", alert["alert"])
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert "{{ $labels." in annotations["description"] or alert["alert"] == "ExstreamWatchdog"
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert path == "docs/runbooks.md"
    assert anchor == alert["alert"].lower()
    assert anchor in runbook_anchors(), f"docs/runbooks.md has no section #{anchor}"


def test_rules_use_only_catalogued_metrics() -> None:
    known = catalogue() | recorded_series()
    for rule in rules():
        for metric in METRIC.findall(rule["expr"]):
            assert metric in known, f"{rule.get('alert') or rule.get('record')}: {metric}"


def test_recording_rules_follow_the_naming_convention() -> None:
    for name in recorded_series():
        assert re.fullmatch(r"exstream:[a-z0-9_]+(:[a-z0-9_]+)?", name), name


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names <= firing, f"never tested firing: {names - firing}"
    assert names - {"ExstreamWatchdog"} <= silent, f"never tested silent: {names - silent}"


def run(*argv: str) -> str:
    tool = shutil.which(argv[0])
    if tool is None:
        pytest.fail(f"{argv[0]} is not installed")
    done = subprocess.run(
        [tool, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_and_unit_tests_pass() -> None:
    assert "SUCCESS" in run("promtool", "check", "rules", str(RULES))
    run("promtool", "test", "rules", *map(str, RULE_TESTS))


def test_amtool_accepts_the_alertmanager_config() -> None:
    assert "SUCCESS" in run("amtool", "check-config", "alerts/alertmanager.yml")


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=ExstreamChannelStalled", "severity=critical", "channel=1"], "pager"),
        (["alertname=ExstreamRestartStorm", "severity=warning", "channel=1"], "tickets"),
        (["alertname=ExstreamWatchdog", "severity=info"], "watchdog"),
        (["alertname=Other", "severity=info"], "default"),
    ],
)
def test_routing_by_severity(labels: list[str], receiver: str) -> None:
    out = run(
        "amtool", "config", "routes", "test", "--config.file=alerts/alertmanager.yml", *labels
    )
    assert out.strip() == receiver


def test_counters_under_increase_alerts_start_at_zero() -> None:
    """increase() misses a counter's first event if its series appears already at 1."""
    metrics = Metrics(CollectorRegistry())
    metrics.add_channel("7")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    for name, labels in [
        ("exstream_channel_unhealthy_total", {"channel": "7", "reason": "stalled"}),
        ("exstream_channel_restarts_total", {"channel": "7", "outcome": "started"}),
        ("exstream_restart_budget_exhausted_total", {"channel": "7"}),
        ("exstream_pool_acquire_failures_total", {"reason": "exhausted"}),
        ("exstream_pool_acquire_failures_total", {"reason": "resources"}),
        ("exstream_orphans_reaped_total", {}),
        ("exstream_storage_damaged_total", {"store": "logs"}),
        ("exstream_storage_damaged_total", {"store": "probe_cache"}),
        ("exstream_logs_dropped_total", {"reason": "queue_full"}),
        ("exstream_logs_dropped_total", {"reason": "unavailable"}),
        ("exstream_logs_dropped_total", {"reason": "write_failed"}),
        ("exstream_http_connections_rejected_total", {"reason": "connection_limit"}),
        ("exstream_http_cross_site_refused_total", {}),
        ("exstream_channel_filler_seconds_total", {"channel": "7", "reason": "starved"}),
        ("exstream_items_skipped_total", {"channel": "7", "reason": "failed"}),
        ("exstream_items_skipped_total", {"channel": "7", "reason": "no_output"}),
        ("exstream_items_skipped_total", {"channel": "7", "reason": "ended_early"}),
    ]:
        assert samples[(name, tuple(sorted(labels.items())))] == 0, name
