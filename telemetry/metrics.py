"""Every `exstream_*` metric, built once on an injected registry.

The names, types and label sets here are a public contract (docs/telemetry.md); the
dashboards and alert rules depend on them, and a test compares both ways.
"""

from __future__ import annotations

import platform

from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    make_asgi_app,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from telemetry.logging import LOG_LEVELS

CHANNEL_STATES = ("stopped", "starting", "running", "slate", "restarting", "failed")
# Known label values: their series exist at zero from the start, so rate() and
# increase() see the first event and a scraper sees every metric at once.
UNHEALTHY_REASONS = (
    "exited",
    "stalled",
    "error",
    "spawn_failed",
    "exhausted",
    "rate_limited",
    "closed",
)
RESTART_OUTCOMES = ("started", "failed", "refused")
EXIT_CODE_CLASSES = ("ok", "error", "signal")
DROP_REASONS = ("slow", "send_timeout")
CONNECTION_REJECT_REASONS = ("header_too_large", "header_timeout", "idle", "connection_limit")
REBUILD_RESULTS = ("ok", "replaced", "empty", "error")
ACQUIRE_FAILURES = ("exhausted", "rate_limited", "spawn_failed", "resources", "closed")
SKIP_REASONS = ("unreadable", "no_streams", "timeout")
LOG_DROP_REASONS = ("queue_full", "unavailable", "write_failed", "closed")
LOG_LINE_DROP_REASONS = ("queue_full", "write_failed")
STORES = ("logs", "probe_cache")
ITEM_SKIP_REASONS = ("failed", "no_output", "ended_early")
FILLER_REASONS = ("no_content", "skipped", "starved")
DISCOVERY_OUTCOMES = ("answered", "other_device", "unreachable", "malformed", "dropped")
HLS_REQUEST_KINDS = ("playlist", "multivariant", "segment")
HLS_REQUEST_OUTCOMES = ("ok", "not_modified", "not_found", "refused")
BUILD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, version: str = "unknown"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # `_created` series: one more series per counter and histogram that no query of
        # ours reads (rate() and increase() handle resets without them).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # The process's own CPU, memory and descriptors (process_open_fds against
        # process_max_fds), and the Python version (python_info).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # Channels and viewers.
        self.channel_up = Gauge(
            "exstream_channel_up",
            "1 while the channel streams (content or slate) and sent output in the stall timeout.",
            ["channel"],
            registry=r,
        )
        self.channel_state = Gauge(
            "exstream_channel_state",
            "1 for the channel's current state, 0 for the others.",
            ["channel", "state"],
            registry=r,
        )
        self.channel_viewers = Gauge(
            "exstream_channel_viewers", "Viewers connected to the channel.", ["channel"], registry=r
        )
        self.channel_output_bytes = Counter(
            "exstream_channel_output_bytes_total",
            "MPEG-TS bytes the channel's process produced.",
            ["channel"],
            registry=r,
        )
        self.channel_last_output = Gauge(
            "exstream_channel_last_output_timestamp_seconds",
            "Unix time of the channel's last output bytes.",
            ["channel"],
            registry=r,
        )
        self.viewer_drops = Counter(
            "exstream_viewer_drops_total",
            "Viewers disconnected by the server, by reason (slow, send_timeout).",
            ["channel", "reason"],
            registry=r,
        )
        # HLS: segments cut from the channels' streams.
        self.hls_viewers = Gauge(
            "exstream_hls_viewers",
            "HLS sessions watching the channel (also counted in exstream_channel_viewers).",
            ["channel"],
            registry=r,
        )
        self.hls_requests = Counter(
            "exstream_hls_requests_total",
            "HLS requests by kind (playlist, multivariant, segment) and outcome.",
            ["channel", "kind", "outcome"],
            registry=r,
        )
        self.hls_segment_build = Histogram(
            "exstream_hls_segment_build_seconds",
            "Processing time spent cutting one HLS segment out of a channel's stream.",
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.hls_segments = Gauge(
            "exstream_hls_segments",
            "HLS segments held in memory: listed, or left the playlist and still fetchable.",
            ["channel"],
            registry=r,
        )
        self.hls_segment_bytes = Gauge(
            "exstream_hls_segment_bytes",
            "Bytes of the HLS segments held in memory.",
            ["channel"],
            registry=r,
        )
        # HTTP.
        self.http_requests = Counter(
            "exstream_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "exstream_http_request_duration_seconds",
            "Time to the end of the response (streams: time to the response headers).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_cross_site_refused = Counter(
            "exstream_http_cross_site_refused_total",
            "State-changing requests refused as a browser's cross-site request (403).",
            registry=r,
        )
        self.http_connections = Gauge(
            "exstream_http_connections", "Open HTTP connections.", registry=r
        )
        self.http_connections_limit = Gauge(
            "exstream_http_connections_limit",
            "Most HTTP connections served at once; more are refused.",
            registry=r,
        )
        self.http_connections_rejected = Counter(
            "exstream_http_connections_rejected_total",
            "HTTP connections refused or closed before a whole request head, by reason.",
            ["reason"],
            registry=r,
        )
        self.open_files_limit = Gauge(
            "exstream_open_files_limit",
            "The process's open files limit (RLIMIT_NOFILE soft limit).",
            registry=r,
        )
        # The cascade: health, restarts, pool, rate limit, processes.
        self.unhealthy = Counter(
            "exstream_channel_unhealthy_total",
            "Process ends that need a restart, by reason (exited, stalled, spawn_failed, ...).",
            ["channel", "reason"],
            registry=r,
        )
        self.restarts = Counter(
            "exstream_channel_restarts_total",
            "Restart attempts by outcome (started, failed, refused).",
            ["channel", "outcome"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "exstream_restart_budget_exhausted_total",
            "Times a channel spent its restart budget and went to state failed.",
            ["channel"],
            registry=r,
        )
        self.restarts_in_flight = Gauge(
            "exstream_restarts_in_flight", "Restarts under way across all channels.", registry=r
        )
        self.pool_processes = Gauge("exstream_pool_processes", "Process slots in use.", registry=r)
        self.pool_capacity = Gauge("exstream_pool_capacity", "Process slots in all.", registry=r)
        self.pool_acquire_duration = Histogram(
            "exstream_pool_acquire_duration_seconds",
            "Time to get a process slot, rate-limit wait included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pool_acquire_failures = Counter(
            "exstream_pool_acquire_failures_total",
            "Slot requests that failed, by reason (exhausted, rate_limited, spawn_failed, ...).",
            ["reason"],
            registry=r,
        )
        self.orphans_reaped = Counter(
            "exstream_orphans_reaped_total",
            "Processes left behind by an earlier run on the same data directory, killed at start.",
            registry=r,
        )
        self.ratelimit_tokens = Gauge(
            "exstream_ratelimit_tokens", "Start-up tokens in the shared bucket.", registry=r
        )
        self.ratelimit_wait = Histogram(
            "exstream_ratelimit_wait_seconds",
            "Time spent waiting for a start-up token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ffmpeg_exits = Counter(
            "exstream_ffmpeg_exits_total",
            "Process exits by code class (ok, error, signal).",
            ["channel", "code_class"],
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "exstream_event_loop_lag_seconds",
            "How late the event loop ran a periodic probe.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        # Playout and media.
        self.playout_horizon = Gauge(
            "exstream_playout_horizon_seconds",
            "Seconds of content scheduled ahead of now.",
            ["channel"],
            registry=r,
        )
        self.playout_rebuilds = Counter(
            "exstream_playout_rebuilds_total",
            "Playout rebuilds by result (ok, replaced, empty, error).",
            ["channel", "result"],
            registry=r,
        )
        self.media_items = Gauge(
            "exstream_media_items", "Playable media items of the channel.", ["channel"], registry=r
        )
        self.media_skipped = Counter(
            "exstream_media_skipped_total",
            "Media files left out by a scan, by reason (unreadable, no_streams, timeout).",
            ["reason"],
            registry=r,
        )
        # The channel's timeline: work-ahead, filler and items that could not play.
        self.channel_workahead = Gauge(
            "exstream_channel_workahead_seconds",
            "Seconds of the channel's stream produced ahead of the wall clock, not yet sent.",
            ["channel"],
            registry=r,
        )
        self.channel_filler = Counter(
            "exstream_channel_filler_seconds_total",
            "Seconds of slate put into the stream, by reason (no_content, skipped, starved).",
            ["channel", "reason"],
            registry=r,
        )
        self.items_skipped = Counter(
            "exstream_items_skipped_total",
            "Scheduled items that could not play to their end, by reason.",
            ["channel", "reason"],
            registry=r,
        )
        # Logs.
        self.log_entries = Counter(
            "exstream_log_entries_total", "Log entries written, by level.", ["level"], registry=r
        )
        self.logs_dropped = Counter(
            "exstream_logs_dropped_total",
            "Log entries the store could not keep, by reason (queue_full, unavailable, ...).",
            ["reason"],
            registry=r,
        )
        self.log_lines_dropped = Counter(
            "exstream_log_lines_dropped_total",
            "Log lines not written to stderr, by reason (queue_full, write_failed).",
            ["reason"],
            registry=r,
        )
        self.logs_invalid_id = Counter(
            "exstream_logs_invalid_id_total",
            "Malformed log entry ids or cursors rejected before any lookup, by kind.",
            ["kind"],
            registry=r,
        )
        # Stores on the data disk (the log store, the probe cache).
        self.storage_degraded = Gauge(
            "exstream_storage_degraded",
            "1 while a store on the data disk cannot be used as configured, by store.",
            ["store"],
            registry=r,
        )
        self.storage_damaged = Counter(
            "exstream_storage_damaged_total",
            "Damaged store files moved aside (and created again), by store.",
            ["store"],
            registry=r,
        )
        self.log_tails = Gauge(
            "exstream_log_tails", "Live log tails (/api/logs/stream) open.", registry=r
        )
        self.log_tails_rejected = Counter(
            "exstream_log_tails_rejected_total",
            "Live log tails refused because [server] max_log_tails were open.",
            registry=r,
        )
        self.discovery_requests = Counter(
            "exstream_discovery_requests_total",
            "HDHomeRun discovery packets received on UDP, by outcome.",
            ["outcome"],
            registry=r,
        )
        # Instances sharing one configuration (docs/scaling.md).
        self.instance_info = Gauge(
            "exstream_instance_info",
            "Always 1; the member label is this instance's name in [cluster] (else the host name).",
            ["member"],
            registry=r,
        )
        self.channel_owned = Gauge(
            "exstream_channel_owned",
            "1 while this instance is the one that runs the channel, else 0.",
            ["channel"],
            registry=r,
        )
        self.cluster_peer_up = Gauge(
            "exstream_cluster_peer_up",
            "1 while a peer instance answers its /readyz, 0 once it counts as down.",
            ["peer"],
            registry=r,
        )
        self.build_info = Gauge(
            "exstream_build_info",
            "Always 1; labels carry the version and the Python version.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version=version, python=platform.python_version()).set(1)
        self.pool_processes.set(0)
        self.restarts_in_flight.set(0)
        for reason in ACQUIRE_FAILURES:
            self.pool_acquire_failures.labels(reason=reason)
        for reason in CONNECTION_REJECT_REASONS:
            self.http_connections_rejected.labels(reason=reason)
        for reason in SKIP_REASONS:
            self.media_skipped.labels(reason=reason)
        for level in LOG_LEVELS:
            self.log_entries.labels(level=level)
        for reason in LOG_DROP_REASONS:
            self.logs_dropped.labels(reason=reason)
        for reason in LOG_LINE_DROP_REASONS:
            self.log_lines_dropped.labels(reason=reason)
        for outcome in DISCOVERY_OUTCOMES:
            self.discovery_requests.labels(outcome=outcome)
        for store in STORES:
            self.storage_degraded.labels(store=store).set(0)
            self.storage_damaged.labels(store=store)

    def add_channel(self, channel: str) -> None:
        """Create the series of a configured channel at zero (gauges are set by their owners)."""
        self.set_channel_state(channel, "stopped")
        self.channel_up.labels(channel=channel).set(0)
        self.channel_viewers.labels(channel=channel).set(0)
        self.hls_viewers.labels(channel=channel).set(0)
        self.hls_segments.labels(channel=channel).set(0)
        self.hls_segment_bytes.labels(channel=channel).set(0)
        for kind in HLS_REQUEST_KINDS:
            for outcome in HLS_REQUEST_OUTCOMES:
                self.hls_requests.labels(channel=channel, kind=kind, outcome=outcome)
        # Nothing is scheduled until the first rebuild, which start-up runs.
        self.playout_horizon.labels(channel=channel).set(0)
        self.media_items.labels(channel=channel).set(0)
        self.channel_output_bytes.labels(channel=channel)
        self.budget_exhausted.labels(channel=channel)
        for reason in UNHEALTHY_REASONS:
            self.unhealthy.labels(channel=channel, reason=reason)
        for outcome in RESTART_OUTCOMES:
            self.restarts.labels(channel=channel, outcome=outcome)
        for code_class in EXIT_CODE_CLASSES:
            self.ffmpeg_exits.labels(channel=channel, code_class=code_class)
        for reason in DROP_REASONS:
            self.viewer_drops.labels(channel=channel, reason=reason)
        for result in REBUILD_RESULTS:
            self.playout_rebuilds.labels(channel=channel, result=result)
        self.channel_workahead.labels(channel=channel).set(0)
        for reason in FILLER_REASONS:
            self.channel_filler.labels(channel=channel, reason=reason)
        for reason in ITEM_SKIP_REASONS:
            self.items_skipped.labels(channel=channel, reason=reason)

    def set_channel_state(self, channel: str, state: str) -> None:
        for name in CHANNEL_STATES:
            self.channel_state.labels(channel=channel, state=name).set(1 if name == state else 0)


def trace_exemplar() -> dict[str, str] | None:
    """The active span's trace id, as an exemplar for a histogram observation."""
    context = trace.get_current_span().get_span_context()
    # An unsampled trace is never exported: an exemplar would point at nothing.
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


class MetricsEndpoint:
    """`/metrics`, Prometheus text or OpenMetrics (with exemplars) by content negotiation.

    A class, so that a Starlette Route treats it as an ASGI app (a plain function would be
    taken for a request handler).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app: ASGIApp = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
