"""End to end on loopback: a stalled channel pages through Alertmanager, and every
dashboard query returns data from a real Prometheus scraping a real exstream."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.conftest import Stack, wait_for
from tests.ops.test_dashboards import dashboard_targets, substitute

# Counters the logs API increments (built separately); until a build exports a sample for
# them their panels are only checked for valid PromQL. Everything else must return data.
MAY_HAVE_NO_SAMPLES = ("exstream_log_entries_total", "exstream_logs_invalid_id_total")


def firing(stack: Stack, alertname: str, channel: str) -> list[dict[str, Any]]:
    return [
        a
        for a in stack.am_alerts(active="true")
        if a["labels"].get("alertname") == alertname and a["labels"].get("channel") == channel
    ]


def stall_channel(stack: Stack, number: int) -> int:
    """SIGSTOP the channel's ffmpeg; returns its pid."""
    pid = wait_for(lambda: stack.channel(number)["pid"], f"channel {number} running", 60)
    wait_for(lambda: stack.channel(number)["state"] == "running", f"channel {number} running", 60)
    os.kill(pid, signal.SIGSTOP)
    return int(pid)


def test_stalled_channel_pages_and_resolves(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not firing(stack, "ExstreamChannelStalled", "1")
    pid = stall_channel(stack, 1)
    stalled_at = time.monotonic()
    stack.faults.add("stall")
    try:
        alert = wait_for(
            lambda: firing(stack, "ExstreamChannelStalled", "1"), "the stall alert", 60
        )[0]
        to_firing = time.monotonic() - stalled_at
        delivered = wait_for(
            lambda: stack.webhook.alerts("firing", alertname="ExstreamChannelStalled", channel="1"),
            "the webhook notification",
            30,
        )
        to_webhook = time.monotonic() - stalled_at
    finally:
        # The monitor killed it (SIGKILL ends a stopped process); make sure all the same.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == "exstream"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#exstreamchannelstalled"
    path, notified = delivered[0]
    assert path == "/pager"
    assert notified["labels"]["channel"] == "1"

    # The monitor restarted the channel with a new process that produces output.
    wait_for(
        lambda: (
            stack.channel(1)["pid"] not in (None, pid) and stack.channel(1)["state"] == "running"
        ),
        "channel 1 restarted",
        30,
    )
    assert stack.query('exstream_channel_unhealthy_total{channel="1",reason="stalled"} >= 1')

    wait_for(lambda: not firing(stack, "ExstreamChannelStalled", "1"), "the alert resolving", 100)
    to_resolved = time.monotonic() - stalled_at
    wait_for(
        lambda: stack.webhook.alerts("resolved", alertname="ExstreamChannelStalled", channel="1"),
        "the resolved notification",
        30,
    )
    with capsys.disabled():
        print(
            f"\n[alert e2e] SIGSTOP -> ExstreamChannelStalled firing in Alertmanager: "
            f"{to_firing:.1f}s, delivered to the webhook: {to_webhook:.1f}s, "
            f"resolved: {to_resolved:.1f}s"
        )


def exhaust_restart_budget(stack: Stack, number: int) -> None:
    """Kill the channel's ffmpeg until the policy refuses a restart (max_restarts = 2)."""
    killed: set[int] = set()

    def next_pid() -> int | None:
        status = stack.channel(number)
        if status["state"] == "failed":
            return -1
        pid = status["pid"]
        return (
            pid if pid is not None and pid not in killed and status["state"] == "running" else None
        )

    while (pid := wait_for(next_pid, f"channel {number} to run again", 30)) != -1:
        killed.add(pid)
        os.kill(pid, signal.SIGKILL)
        assert len(killed) <= 5, "the restart budget was never exhausted"


@pytest.fixture
def faults(stack: Stack) -> Stack:
    """A stall, a spent restart budget, a stream viewer and some API errors, each once."""
    for path in ("/api/channels/999", "/api/logs/entries/not*a*valid*id", "/nowhere"):
        assert httpx.get(stack.exstream.url + path, timeout=5).status_code >= 400
    if "stall" not in stack.faults:
        pid = stall_channel(stack, 1)
        stack.faults.add("stall")
        wait_for(lambda: stack.channel(1)["pid"] not in (None, pid), "channel 1 restarted", 30)
    if "budget" not in stack.faults:
        exhaust_restart_budget(stack, 2)
        stack.faults.add("budget")
    with httpx.stream("GET", f"{stack.exstream.url}/stream/1.ts", timeout=15) as response:
        assert response.status_code == 200
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 64 * 1024:
                break
    wait_for(
        lambda: stack.query('exstream_restart_budget_exhausted_total{channel="2"} >= 1'),
        "the budget exhaustion scraped",
    )
    wait_for(
        lambda: stack.query('exstream_http_requests_total{route="/stream/{number:int}.ts"}'),
        "the stream request scraped",
    )
    # Rates need two samples of every series inside the window.
    wait_for(
        lambda: stack.query(
            'min(count_over_time(exstream_http_requests_total{status=~"[45].."}[10s])) >= 5'
        ),
        "the error requests scraped",
    )
    return stack


def exported_samples(stack: Stack) -> set[str]:
    text = httpx.get(f"{stack.exstream.url}/metrics", timeout=5).text
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if family.samples
    }


def test_every_dashboard_query_returns_data(faults: Stack) -> None:
    stack = faults
    exported = exported_samples(stack)
    end = time.time()
    start = stack.started
    empty: list[str] = []
    checked = 0
    for dashboard, title, expr in dashboard_targets():
        query = substitute(expr, channels="1|2|3", range_seconds=end - start)
        response = httpx.get(
            f"{stack.prometheus.url}/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": 1},
            timeout=15,
        )
        body = response.json()
        assert body["status"] == "success", f"{dashboard} / {title}: {query}: {body}"
        checked += 1
        if body["data"]["result"]:
            continue
        if any(name in query and name not in exported for name in MAY_HAVE_NO_SAMPLES):
            continue
        empty.append(f"{dashboard} / {title}: {query}")
    assert checked >= 30
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_spent_restart_budget_fires_channel_failed(faults: Stack) -> None:
    alert = wait_for(
        lambda: firing(faults, "ExstreamChannelFailed", "2"),
        "ExstreamChannelFailed in Alertmanager",
        30,
    )[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#exstreamchannelfailed"


def test_pool_acquire_exemplars_link_traces(faults: Stack) -> None:
    query = "exstream_pool_acquire_duration_seconds_bucket"
    response = httpx.get(
        f"{faults.prometheus.url}/api/v1/query_exemplars",
        params={"query": query, "start": faults.started, "end": time.time()},
        timeout=10,
    )
    body = response.json()
    assert body["status"] == "success", body
    trace_ids = [
        exemplar["labels"]["trace_id"]
        for series in body["data"]
        for exemplar in series["exemplars"]
    ]
    assert trace_ids, "no exemplars stored for the pool acquire histogram"
    assert all(len(t) == 32 and int(t, 16) for t in trace_ids)
