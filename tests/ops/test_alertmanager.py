"""Inhibitions and grouping of alerts/alertmanager.yml, through a real Alertmanager's API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from tests.ops.conftest import Service, Webhook, wait_for

INSTANCE = "inhibit-test:8410"


def post(alertmanager: Service, *alerts: dict[str, str]) -> None:
    ends = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    body = [
        {"labels": {"job": "exstream", "instance": INSTANCE, **labels}, "endsAt": ends}
        for labels in alerts
    ]
    response = httpx.post(f"{alertmanager.url}/api/v2/alerts", json=body, timeout=5)
    assert response.status_code == 200, response.text


def state_of(alertmanager: Service, **labels: str) -> dict[str, Any] | None:
    response = httpx.get(f"{alertmanager.url}/api/v2/alerts", timeout=5)
    for alert in response.json():
        if all(alert["labels"].get(k) == v for k, v in labels.items()):
            status: dict[str, Any] = alert["status"]
            return status
    return None


def test_a_failed_channel_inhibits_its_own_stall_only(
    alertmanager: Service, webhook: Webhook
) -> None:
    post(
        alertmanager,
        {"alertname": "ExstreamChannelFailed", "severity": "critical", "channel": "91"},
        {"alertname": "ExstreamChannelStalled", "severity": "critical", "channel": "91"},
        {"alertname": "ExstreamChannelStalled", "severity": "critical", "channel": "92"},
    )
    inhibited = wait_for(
        lambda: (
            (s := state_of(alertmanager, alertname="ExstreamChannelStalled", channel="91"))
            and s["state"] == "suppressed"
            and s
        ),
        "the stall of the failed channel suppressed",
    )
    assert inhibited["inhibitedBy"]
    other = wait_for(
        lambda: state_of(alertmanager, alertname="ExstreamChannelStalled", channel="92"),
        "the other channel's stall",
    )
    assert other["state"] == "active"
    assert not other["inhibitedBy"]
    # The active ones reach the pager; the inhibited one never does.
    wait_for(
        lambda: webhook.alerts("firing", alertname="ExstreamChannelStalled", channel="92"),
        "the other stall delivered",
    )
    wait_for(
        lambda: webhook.alerts("firing", alertname="ExstreamChannelFailed", channel="91"),
        "the failure delivered",
    )
    assert not webhook.alerts("firing", alertname="ExstreamChannelStalled", channel="91")


def test_target_down_inhibits_the_rest_of_its_instance(alertmanager: Service) -> None:
    post(
        alertmanager,
        {"alertname": "ExstreamTargetDown", "severity": "critical"},
        {"alertname": "ExstreamPoolSaturated", "severity": "warning"},
        {"alertname": "ExstreamChannelNoOutput", "severity": "critical", "channel": "93"},
    )
    for name in ("ExstreamPoolSaturated", "ExstreamChannelNoOutput"):

        def suppressed(name: str = name) -> dict[str, Any] | None:
            status = state_of(alertmanager, alertname=name, instance=INSTANCE)
            return status if status is not None and status["state"] == "suppressed" else None

        assert wait_for(suppressed, f"{name} suppressed by ExstreamTargetDown")["inhibitedBy"]
    down = state_of(alertmanager, alertname="ExstreamTargetDown", instance=INSTANCE)
    assert down is not None
    assert down["state"] == "active"


def test_a_degraded_log_store_inhibits_its_own_drops_only(alertmanager: Service) -> None:
    # Instances of their own: ExstreamTargetDown of INSTANCE would suppress everything.
    logs_off, cache_off = "logs-off:8410", "cache-off:8410"
    post(
        alertmanager,
        {"alertname": "ExstreamStorageDegraded", "severity": "warning", "store": "logs",
         "instance": logs_off},
        {"alertname": "ExstreamLogsDropped", "severity": "warning", "reason": "unavailable",
         "instance": logs_off},
        {"alertname": "ExstreamLogsDropped", "severity": "warning", "reason": "queue_full",
         "instance": logs_off},
        {"alertname": "ExstreamStorageDegraded", "severity": "warning",
         "store": "probe_cache", "instance": cache_off},
        {"alertname": "ExstreamLogsDropped", "severity": "warning", "reason": "unavailable",
         "instance": cache_off},
    )  # fmt: skip

    def status(instance: str, reason: str) -> dict[str, Any] | None:
        return state_of(
            alertmanager, alertname="ExstreamLogsDropped", instance=instance, reason=reason
        )

    inhibited = wait_for(
        lambda: (s := status(logs_off, "unavailable")) and s["state"] == "suppressed" and s,
        "the drops of the degraded log store suppressed",
    )
    assert inhibited["inhibitedBy"]
    # A writer that falls behind is not the store's fault; nor does the probe cache
    # explain log entries dropped elsewhere.
    for instance, reason in [(logs_off, "queue_full"), (cache_off, "unavailable")]:
        other = wait_for(partial(status, instance, reason), f"{reason} on {instance}")
        assert other["state"] == "active", (instance, reason)
        assert not other["inhibitedBy"]
