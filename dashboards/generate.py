"""Writes the Grafana dashboards in this folder: `python dashboards/generate.py`.

The JSON files are what Grafana loads (dashboards/provisioning/); this script is how they
are kept consistent (one datasource variable, one channel variable, a unit on every
panel, `$__rate_interval` in every rate). tests/ops checks the files match its output.

The configured work-ahead (`[stream] workahead`) is not a metric: the dashboards that show
the work-ahead have a `workahead` text variable (default 5, the service's default) that
the operator sets to the configured value; it is drawn as a reference line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
CH = 'channel=~"$channel"'
SCHEMA_VERSION = 39
WORKAHEAD_DEFAULT = "5"  # [stream] workahead's default, in seconds
Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def panel(kind: str, title: str, unit: str, targets: list[tuple[str, str]], **extra: Any) -> Panel:
    refs = "ABCDEFGH"
    body: Panel = {
        "type": kind,
        "title": title,
        "description": extra.pop("description", ""),
        "datasource": DS,
        "fieldConfig": {
            "defaults": {"unit": unit, **extra.pop("defaults", {})},
            "overrides": extra.pop("overrides", []),
        },
        "options": extra.pop("options", {"legend": {"displayMode": "list", "placement": "bottom"}}),
        "targets": [target(e, leg, refs[i]) for i, (e, leg) in enumerate(targets)],
    }
    body.update(extra)
    return body


def timeseries(title: str, unit: str, *targets: tuple[str, str], **extra: Any) -> Panel:
    return panel("timeseries", title, unit, list(targets), **extra)


def heatmap(title: str, expr: str, description: str) -> Panel:
    body = panel(
        "heatmap",
        title,
        "s",
        [(expr, "{{le}}")],
        description=description,
        options={
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellValues": {"unit": "short"},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "tooltip": {"show": True, "yHistogram": True},
        },
    )
    body["targets"][0].update({"format": "heatmap", "exemplar": True})
    return body


def workahead_variable() -> dict[str, Any]:
    """The configured `[stream] workahead`, typed in by the operator: not exported."""
    return {
        "name": "workahead",
        "label": "Configured work-ahead (s)",
        "description": "[stream] workahead of this instance, in seconds (default 5): "
        "drawn as the reference line of the work-ahead panels.",
        "type": "textbox",
        "query": WORKAHEAD_DEFAULT,
        "current": {"text": WORKAHEAD_DEFAULT, "value": WORKAHEAD_DEFAULT},
        "options": [{"selected": True, "text": WORKAHEAD_DEFAULT, "value": WORKAHEAD_DEFAULT}],
        "hide": 0,
    }


def workahead_panel(title: str, description: str) -> Panel:
    """Seconds each channel has produced ahead of the wall clock, with the configured
    value as a reference line and the alert's zone (below 1 s) shaded."""
    return timeseries(
        title,
        "s",
        (f"exstream_channel_workahead_seconds{{{CH}}}", "{{channel}}"),
        ("vector($workahead)", "configured"),
        description=description,
        defaults={
            "min": 0,
            "thresholds": {
                "mode": "absolute",
                "steps": [
                    {"color": "semi-dark-red", "value": None},
                    {"color": "transparent", "value": 1},
                ],
            },
            "custom": {"thresholdsStyle": {"mode": "area"}},
        },
        overrides=[
            {
                "matcher": {"id": "byName", "options": "configured"},
                "properties": [
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "text"}},
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                    {"id": "custom.lineWidth", "value": 1},
                ],
            }
        ],
    )


def layout(panels: list[Panel], width: int = 12, height: int = 8) -> list[Panel]:
    per_row = 24 // width
    for index, p in enumerate(panels):
        p["id"] = index + 1
        p["gridPos"] = {
            "x": (index % per_row) * width,
            "y": (index // per_row) * height,
            "w": width,
            "h": height,
        }
    return panels


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Panel],
    variables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["exstream"],
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "graphTooltip": 1,
        "links": [
            {"type": "dashboards", "tags": ["exstream"], "asDropdown": False, "title": "exstream"}
        ],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "channel",
                    "label": "Channel",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(exstream_channel_up, channel)",
                        "refId": "channel",
                    },
                    "definition": "label_values(exstream_channel_up, channel)",
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 3,
                    "hide": 0,
                },
                *(variables or []),
            ]
        },
        "panels": layout(panels),
    }


def cascade() -> dict[str, Any]:
    rate = "[$__rate_interval]"
    return dashboard(
        "exstream-cascade",
        "exstream / Cascade",
        "The failure cascade: stall -> unhealthy -> restart -> pool -> token bucket -> ffmpeg, "
        "and whether the work-ahead hid it from viewers.",
        [
            timeseries(
                "Unhealthy checks by reason",
                "short",
                (
                    "sum by (channel, reason) "
                    f"(increase(exstream_channel_unhealthy_total{{{CH}}}{rate}))",
                    "{{channel}} {{reason}}",
                ),
                description="Process ends that went through the restart policy: exited "
                "(crashed, or three items in a row could not play), stalled (killed by the "
                "health monitor), spawn or pool failures. Skipped items, item changes and "
                "operator restarts are not counted.",
            ),
            timeseries(
                "Restarts by outcome",
                "short",
                (
                    f"sum by (outcome) (increase(exstream_channel_restarts_total{{{CH}}}{rate}))",
                    "{{outcome}}",
                ),
            ),
            workahead_panel(
                "Work-ahead during restarts",
                "Seconds of stream each channel has ready ahead of the wall clock. A restart "
                "drains it; the heal is invisible to viewers while it stays above 0, and it "
                "refills once the new process runs. The dashed line is the `workahead` "
                "variable (set it to [stream] workahead).",
            ),
            timeseries(
                "Slate viewers saw (starved)",
                "percentunit",
                (
                    "sum by (channel) (rate(exstream_channel_filler_seconds_total"
                    f'{{{CH},reason="starved"}}{rate}))',
                    "{{channel}}",
                ),
                description="Share of each channel's stream that was slate because content "
                "was late (a process slow, stalled or restarting past the work-ahead): 0 means "
                "the restarts above never reached viewers; 100% is a whole interval of slate.",
                defaults={"min": 0},
            ),
            timeseries(
                "Restart budget exhaustions",
                "short",
                (
                    "sum by (channel) "
                    f"(increase(exstream_restart_budget_exhausted_total{{{CH}}}{rate}))",
                    "{{channel}}",
                ),
                description="A channel spent max_restarts within restart_window: state failed.",
            ),
            timeseries(
                "Restarts in flight",
                "short",
                ("sum(exstream_restarts_in_flight)", "in flight"),
            ),
            heatmap(
                "Pool acquire latency",
                f"sum by (le) (increase(exstream_pool_acquire_duration_seconds_bucket{rate}))",
                "Time to get a process slot (rate-limit wait included). "
                "Exemplars link to the trace of the acquire.",
            ),
            timeseries(
                "Pool slots and acquire failures",
                "short",
                ("sum(exstream_pool_processes)", "in use"),
                ("sum(exstream_pool_capacity)", "capacity"),
                (
                    f"sum by (reason) (increase(exstream_pool_acquire_failures_total{rate}))",
                    "failed: {{reason}}",
                ),
            ),
            timeseries(
                "Token bucket level",
                "short",
                ("sum(exstream_ratelimit_tokens)", "tokens"),
                description="Start-up tokens left in the shared bucket.",
            ),
            timeseries(
                "Token waits",
                "s",
                (
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(exstream_ratelimit_wait_seconds_bucket{rate})))",
                    "p95",
                ),
                (
                    f"sum(rate(exstream_ratelimit_wait_seconds_sum{rate}))"
                    f" / sum(rate(exstream_ratelimit_wait_seconds_count{rate}))",
                    "mean",
                ),
            ),
            timeseries(
                "ffmpeg exits",
                "short",
                (
                    "sum by (channel, code_class) "
                    f"(increase(exstream_ffmpeg_exits_total{{{CH}}}{rate}))",
                    "{{channel}} {{code_class}}",
                ),
            ),
            timeseries(
                "Event-loop lag",
                "s",
                (
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(exstream_event_loop_lag_seconds_bucket{rate})))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(exstream_event_loop_lag_seconds_bucket{rate})))",
                    "p99",
                ),
            ),
            timeseries(
                "Spawns short of resources and orphans reaped",
                "short",
                (
                    "sum(increase(exstream_pool_acquire_failures_total"
                    f'{{reason="resources"}}{rate}))',
                    "spawns short of resources",
                ),
                ("sum(exstream_orphans_reaped_total)", "orphans reaped at start"),
                description="Spawns that failed because the machine had no file descriptors, "
                "memory or processes left (EMFILE, ENFILE, ENOMEM, EAGAIN): retried with "
                "backoff outside the restart budget, slate meanwhile. Orphans: processes an "
                "earlier run on the same data directory left behind, killed at this run's "
                "start (a count since start, not a rate: they are killed before the first "
                "scrape).",
                defaults={"min": 0},
            ),
        ],
        variables=[workahead_variable()],
    )


def channels() -> dict[str, Any]:
    rate = "[$__rate_interval]"
    states = {
        "type": "value",
        "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}},
    }
    return dashboard(
        "exstream-channels",
        "exstream / Channels",
        "What each channel is doing: state, work-ahead, slate, viewers, output, playout.",
        [
            panel(
                "state-timeline",
                "Channel state",
                "none",
                [(f"exstream_channel_state{{{CH}}} == 1", "{{channel}} {{state}}")],
                options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
            ),
            panel(
                "stat",
                "Channel up",
                "none",
                [(f"exstream_channel_up{{{CH}}}", "{{channel}}")],
                defaults={"mappings": [states]},
                options={"colorMode": "background", "graphMode": "none", "textMode": "auto"},
            ),
            workahead_panel(
                "Work-ahead",
                "Seconds of stream each channel has produced ahead of the wall clock and not "
                "yet sent (0 when stopped). Healthy is near the dashed line, the `workahead` "
                "variable (set it to [stream] workahead); draining toward 0 means viewers see "
                "slate soon (ExstreamWorkaheadLow below 1 s, the red zone).",
            ),
            timeseries(
                "Slate by reason and skipped items",
                "percentunit",
                (
                    "sum by (channel, reason) "
                    f"(rate(exstream_channel_filler_seconds_total{{{CH}}}{rate}))",
                    "{{channel}} slate: {{reason}}",
                ),
                (
                    "sum by (channel, reason) "
                    f"(increase(exstream_items_skipped_total{{{CH}}}{rate}))",
                    "{{channel}} item skipped: {{reason}}",
                ),
                description="Lines (left): seconds of slate per second of stream, by reason: "
                "no_content (nothing to play), skipped (the slot of an item that could not "
                "play), starved (content late: viewers saw a slow, stalled or restarting "
                "process). Bars (right): scheduled items skipped, by reason: failed, "
                "no_output, ended_early.",
                defaults={"min": 0},
                overrides=[
                    {
                        "matcher": {"id": "byFrameRefID", "options": "B"},
                        "properties": [
                            {"id": "unit", "value": "short"},
                            {"id": "decimals", "value": 0},
                            {"id": "custom.axisPlacement", "value": "right"},
                            {"id": "custom.axisLabel", "value": "items skipped"},
                            {"id": "custom.drawStyle", "value": "bars"},
                            {"id": "custom.fillOpacity", "value": 60},
                        ],
                    }
                ],
            ),
            timeseries("Viewers", "short", (f"exstream_channel_viewers{{{CH}}}", "{{channel}}")),
            timeseries(
                "Output bitrate",
                "bps",
                (f"exstream:channel_output_bitrate:rate1m{{{CH}}}", "{{channel}}"),
                description="MPEG-TS bits per second each channel sends to its viewers "
                "(content and slate, paced on the wall clock).",
            ),
            timeseries(
                "Seconds since last output",
                "s",
                (f"exstream:channel_seconds_since_output{{{CH}}}", "{{channel}}"),
                description="Grows while a channel sends nothing (slate counts as output); "
                "stopped channels keep the age of their last output.",
            ),
            timeseries(
                "Playout horizon",
                "s",
                (f"exstream_playout_horizon_seconds{{{CH}}}", "{{channel}}"),
            ),
            timeseries(
                "Viewer drops",
                "short",
                (
                    "sum by (channel, reason) "
                    f"(increase(exstream_viewer_drops_total{{{CH}}}{rate}))",
                    "{{channel}} {{reason}}",
                ),
            ),
            timeseries(
                "Media items",
                "short",
                (f"exstream_media_items{{{CH}}}", "{{channel}}"),
                (f"sum by (reason) (increase(exstream_media_skipped_total{rate}))", "skipped"),
            ),
            timeseries(
                "HLS viewers and requests",
                "short",
                (f"exstream_hls_viewers{{{CH}}}", "{{channel}} viewers"),
                (
                    "sum by (channel, kind, outcome) "
                    f"(rate(exstream_hls_requests_total{{{CH}}}{rate}))",
                    "{{channel}} {{kind}} {{outcome}}",
                ),
                description="HLS sessions (players that keep reloading the playlist; also "
                "counted in Viewers), and playlist, multivariant and segment requests per "
                "second by outcome: segment not_found while viewers stay means segments "
                "left the origin while players still asked for them.",
                defaults={"min": 0},
            ),
            timeseries(
                "HLS segments in memory",
                "bytes",
                (f"exstream_hls_segment_bytes{{{CH}}}", "{{channel}} bytes"),
                description="Bytes of HLS segments each channel holds: the playlist's "
                "window and the segments that just left it, while it has HLS viewers.",
                defaults={"min": 0},
            ),
            timeseries(
                "Cluster: where channels run",
                "short",
                (f"exstream_channel_owned{{{CH}}}", "{{channel}} on {{instance}}"),
                description="1 where an instance runs the channel: a single server runs "
                "every channel; in a cluster exactly one member runs each (see "
                "ExstreamChannelUnowned and ExstreamChannelOwnedTwice; each member's view of "
                "its peers is exstream_cluster_peer_up, ExstreamPeerDown).",
                defaults={"min": 0},
            ),
        ],
        variables=[workahead_variable()],
    )


def api() -> dict[str, Any]:
    rate = "[$__rate_interval]"
    stores = {
        "type": "value",
        "options": {
            "0": {"text": "ok", "color": "green"},
            "1": {"text": "degraded", "color": "red"},
        },
    }
    return dashboard(
        "exstream-api",
        "exstream / API and logs",
        "HTTP requests by route template, errors, latency; connections and refusals; log "
        "entries, dropped entries and live tails; the stores on the data disk.",
        [
            timeseries(
                "Request rate by route",
                "reqps",
                (
                    f"sum by (route) (rate(exstream_http_requests_total{rate}))",
                    "{{route}}",
                ),
            ),
            timeseries(
                "Errors by route",
                "reqps",
                (
                    'sum by (route, status) (rate(exstream_http_requests_total{status=~"[45].."}'
                    f"{rate}))",
                    "{{route}} {{status}}",
                ),
            ),
            timeseries(
                "5xx ratio",
                "percentunit",
                ("exstream:http_requests_5xx:ratio_rate5m", "{{instance}}"),
            ),
            timeseries(
                "Latency p95 by route",
                "s",
                (
                    "histogram_quantile(0.95, sum by (route, le) "
                    f"(rate(exstream_http_request_duration_seconds_bucket{rate})))",
                    "{{route}}",
                ),
                description="Streams count the time to their response headers.",
            ),
            timeseries(
                "Open connections and limits",
                "short",
                ("sum(exstream_http_connections)", "open"),
                ("sum(exstream_http_connections_limit)", "connection limit"),
                ("sum(exstream_open_files_limit)", "open files limit"),
                description="Open HTTP connections (viewers, log tails, API calls, heads not "
                "yet complete) against the connection limit ([server] max_connections, or the "
                "open files limit less what the channels' processes need); beyond it "
                "connections get 503 too_many_connections. ExstreamConnectionsNearLimit "
                "fires above 80% for 5 minutes.",
                defaults={"min": 0},
            ),
            timeseries(
                "Refused connections and requests",
                "short",
                (
                    f"sum by (reason) (increase(exstream_http_connections_rejected_total{rate}))",
                    "{{reason}}",
                ),
                (
                    f"sum(increase(exstream_http_cross_site_refused_total{rate}))",
                    "cross_site_request",
                ),
                description="Connections refused or closed before a whole request head: "
                "header_too_large (431), header_timeout (408), idle (closed), "
                "connection_limit (503: the limit was reached); and state-changing requests "
                "a browser sent for another site's page (403 cross_site_request).",
                defaults={"min": 0},
            ),
            timeseries(
                "Log entries by level",
                "cps",
                (f"sum by (level) (rate(exstream_log_entries_total{rate}))", "{{level}}"),
            ),
            timeseries(
                "Rejected log ids and dropped entries",
                "short",
                (
                    f"sum by (kind) (increase(exstream_logs_invalid_id_total{rate}))",
                    "invalid {{kind}}",
                ),
                (
                    f"sum by (reason) (increase(exstream_logs_dropped_total{rate}))",
                    "dropped: {{reason}}",
                ),
                (
                    f"sum by (reason) (increase(exstream_log_lines_dropped_total{rate}))",
                    "stderr: {{reason}}",
                ),
                description="Dropped log entries by reason: queue_full (the writer fell "
                "behind), unavailable (the log store is off), write_failed (an insert "
                "failed), closed (logged after the store closed at shutdown); stderr has "
                "every line unless it was not taking them (stderr: queue_full, "
                "write_failed), when the log store has every line.",
                defaults={"min": 0},
            ),
            timeseries(
                "Live log tails",
                "short",
                ("sum(exstream_log_tails)", "open"),
                (f"sum(increase(exstream_log_tails_rejected_total{rate}))", "refused"),
                description="Open /api/logs/stream tails, and tails refused (503 "
                "too_many_log_tails) because [server] max_log_tails were open.",
                defaults={"min": 0},
            ),
            panel(
                "state-timeline",
                "Stores on the data disk",
                "none",
                [("max by (store) (exstream_storage_degraded)", "{{store}}")],
                description="The log store and the probe cache: degraded while their file "
                "cannot be used (full or read-only disk, damage); /readyz says why under "
                "storage. Streaming never depends on them.",
                defaults={"mappings": [stores]},
                options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
            ),
            timeseries(
                "Damaged store files moved aside",
                "short",
                ("sum by (store) (exstream_storage_damaged_total)", "{{store}}"),
                description="Damaged store files moved aside as <file>.damaged-<UTC time> "
                "and created again, since this run's start (most damage is found at start, "
                "before the first scrape).",
                defaults={"min": 0, "decimals": 0},
            ),
        ],
    )


DASHBOARDS = {"cascade.json": cascade, "channels.json": channels, "api.json": api}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
