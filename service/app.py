"""The application factory: routes, error handling, and the lifespan that owns the graph."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from loguru import logger
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import __version__, openapi
from service.api import channels, cluster, guide, hdhomerun, hls, logs, probes, streams
from service.auth import BearerAuthMiddleware, LogsNeedTokenMiddleware
from service.channels import ChannelRegistry
from service.children import child_environment
from service.cluster import Membership, PeerMonitor
from service.config import Settings
from service.csrf import CrossSiteGuard
from service.discovery import start_discovery
from service.errors import ExstreamError
from service.exposure import is_loopback
from service.health import HealthMonitor, measure_loop_lag
from service.hls.service import HlsService
from service.httpmetrics import HttpMetricsMiddleware
from service.logstore import LogStore
from service.media import MediaScanner, ProbeCache, log_progress, probe_cache_health
from service.orphans import marker, reap_orphans
from service.pool import ProcessFactory, ProcessPool
from service.process import ManagedProcess
from service.proxies import TrustedProxies
from service.ratelimit import TokenBucket
from service.refusals import TailSlots
from service.restart import RestartPolicy
from service.slate import SlateClip
from service.tools import check_tools
from service.tuner import tuner_of_settings
from service.types import AppState
from service.web import routes as web
from service.web.history import History, keep_history
from telemetry.metrics import Metrics, MetricsEndpoint
from telemetry.tracing import TRACER, http_tracing, is_enabled

HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
}


async def exstream_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExstreamError)
    return JSONResponse(
        {"error": exc.code, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def server_error(request: Request, exc: Exception) -> Response:
    logger.opt(exception=exc).error("unhandled error on {} {}", request.method, request.url.path)
    return JSONResponse({"error": "internal_error", "detail": "internal error"}, status_code=500)


def routes(metrics: Metrics) -> list[Route]:
    return [
        Route("/stream/{number:int}.ts", streams.stream, methods=["GET"]),
        *hls.ROUTES,
        Route("/iptv/channels.m3u", guide.m3u, methods=["GET"]),
        Route("/iptv/xmltv.xml", guide.xmltv, methods=["GET"]),
        Route("/iptv/xmltv.xml.gz", guide.xmltv_gz, methods=["GET"]),
        Route("/discover.json", hdhomerun.discover, methods=["GET"]),
        Route("/lineup.json", hdhomerun.lineup, methods=["GET"]),
        Route("/lineup_status.json", hdhomerun.lineup_status, methods=["GET"]),
        Route("/lineup.post", hdhomerun.lineup_post, methods=["POST"]),
        Route("/device.xml", hdhomerun.device_xml, methods=["GET"]),
        Route("/api/channels", channels.list_channels, methods=["GET"]),
        Route("/api/channels/{number:int}", channels.get_channel, methods=["GET"]),
        Route("/api/channels/{number:int}/restart", channels.restart_channel, methods=["POST"]),
        Route("/api/cluster", cluster.cluster, methods=["GET"]),
        Route("/api/cluster/owner", cluster.owner, methods=["GET"]),
        Route("/healthz", probes.healthz, methods=["GET"]),
        Route("/readyz", probes.readyz, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        *logs.ROUTES,
        Route("/metrics", MetricsEndpoint(metrics.registry), methods=["GET"]),
        *web.ROUTES,
    ]


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    process_factory: ProcessFactory = ManagedProcess,
    tracer_provider: trace.TracerProvider | None = None,
) -> Starlette:
    metrics = Metrics(registry, version=__version__)
    for channel in settings.channels:
        metrics.add_channel(str(channel.number))
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = provider.get_tracer(TRACER, __version__)
    membership = Membership(settings.cluster, (c.number for c in settings.channels), metrics)
    # Built before the app starts so that __main__ can hand its sink to loguru.
    log_store = LogStore(settings.server.data_dir / "logs.sqlite", settings.logs, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            await log_store.start()
            # Entries reach the store's queue as they are logged (no queue in between), so
            # everything logged until the close, shutdown included, is kept or counted.
            stack.push_async_callback(log_store.close)
            state = await _build(
                settings, metrics, process_factory, tracer, stack, log_store, membership
            )
            tuner = tuner_of_settings(settings)
            discovery = None
            if settings.hdhomerun.discovery:
                discovery = await start_discovery(settings, tuner, metrics)
                if discovery is not None:
                    stack.push_async_callback(discovery.close)  # also if start-up fails
            history = History(state.channels.channels)
            hls_service = HlsService(state.channels, settings, metrics)
            tasks = [
                asyncio.create_task(_forever(lambda: keep_history(history, state), "history")),
                asyncio.create_task(_forever(state.monitor.run, "health monitor")),
                asyncio.create_task(_forever(state.channels.run_rebuilds, "playout rebuild")),
                asyncio.create_task(_forever(lambda: measure_loop_lag(metrics), "loop lag")),
            ]
            if settings.cluster.enabled:
                peers = PeerMonitor(membership, settings.cluster, state.channels.rebalance)
                tasks.append(asyncio.create_task(_forever(peers.run, "cluster peer checks")))
            state.channels.start_always_on()
            app.state.exstream = state
            logger.info(
                "exstream ready: {} channel(s) on http://{}:{}",
                len(settings.channels), settings.server.host, settings.server.port,
            )  # fmt: skip
            try:
                yield {"exstream": state, "tuner": tuner, "history": history, "hls": hls_service}
            finally:
                await hls_service.close(settings.server.graceful_shutdown)
                if discovery is not None:
                    await discovery.close()  # sends no client to a service that is stopping
                await _shutdown(state, tasks, settings.server.graceful_shutdown)

    server = settings.server
    # The client a trusted proxy forwards, before anything reads the client; tracing next,
    # so request metrics see the server span (exemplars).
    middleware = [Middleware(TrustedProxies, trusted=server.trusted_proxies)]
    if is_enabled(provider):
        middleware.append(http_tracing(provider))
    middleware.append(Middleware(HttpMetricsMiddleware, metrics=metrics))
    middleware.append(Middleware(CrossSiteGuard, metrics=metrics, public_url=server.public_url))
    if server.api_token:
        middleware.append(Middleware(BearerAuthMiddleware, token=server.api_token))
    elif not is_loopback(server.host):
        middleware.append(Middleware(LogsNeedTokenMiddleware))
    if settings.cluster.enabled:
        middleware.append(Middleware(cluster.OwnerRouting, membership=membership))
    app = Starlette(
        routes=routes(metrics),
        middleware=middleware,
        exception_handlers={
            ExstreamError: exstream_error,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    # A redirect to the slash-less path would take its host from the request's Host header.
    app.router.redirect_slashes = False
    app.state.log_store = log_store
    app.state.metrics = metrics
    app.state.membership = membership
    return app


def log_store_of(app: Starlette) -> LogStore:
    return cast(LogStore, app.state.log_store)


def metrics_of(app: Starlette) -> Metrics:
    return cast(Metrics, app.state.metrics)


def begin_shutdown(app: Starlette) -> None:
    """End every endless response at once (log tails, viewers' streams).

    uvicorn runs the lifespan's shutdown only after open connections close or its
    graceful timeout passes; the server calls this when it stops accepting instead.
    """
    log_store_of(app).close_streams()
    state: AppState | None = getattr(app.state, "exstream", None)
    if state is not None:
        state.channels.close_hubs()


async def _build(
    settings: Settings,
    metrics: Metrics,
    process_factory: ProcessFactory,
    tracer: trace.Tracer,
    stack: contextlib.AsyncExitStack,
    log_store: LogStore,
    membership: Membership,
) -> AppState:
    # Before any spawn: what an earlier run on this data directory left running.
    data_dir = settings.server.data_dir
    await reap_orphans(data_dir, metrics)
    env = child_environment(os.environ, pass_env=settings.ffmpeg.pass_env, marker=marker(data_dir))
    bucket = TokenBucket(settings.pool.spawn_rate, settings.pool.spawn_burst)
    pool = ProcessPool(
        settings.pool.max_processes,
        bucket,
        metrics,
        acquire_timeout=settings.pool.acquire_timeout,
        process_factory=process_factory,
        env=env,
        tracer=tracer,
    )
    health = settings.health
    policy = RestartPolicy(
        health.max_restarts,
        health.restart_window,
        backoff_initial=health.backoff_initial,
        backoff_max=health.backoff_max,
        max_in_flight=health.max_in_flight,
    )
    metrics.restarts_in_flight.set_function(lambda: policy.in_flight)
    # The stores make the data directory themselves: when they cannot, they degrade.
    cache_path = settings.server.data_dir / "media-cache.sqlite"
    cache = ProbeCache(cache_path, probe_cache_health(cache_path, metrics))
    stack.callback(cache.close)
    scanner = MediaScanner(
        settings.ffmpeg.ffprobe,
        cache,
        timeout=settings.ffmpeg.probe_timeout,
        concurrency=settings.ffmpeg.probe_concurrency,
        progress=log_progress("channels"),
        env=env,
    )
    slate = SlateClip(settings.ffmpeg, env=env)
    slate.start()  # made in the background: nothing waits for it but a fill
    stack.push_async_callback(slate.close)
    registry = ChannelRegistry(
        settings,
        pool=pool,
        policy=policy,
        scanner=scanner,
        metrics=metrics,
        tracer=tracer,
        slate=slate,
        owner=lambda number: None if membership.owns(number) else membership.owner(number).name,
    )
    monitor = HealthMonitor(
        registry.runners,
        check_interval=health.check_interval,
        stall_timeout=health.stall_timeout,
        metrics=metrics,
        tracer=tracer,
    )
    # The tools are tried while the media are scanned, not before.
    tool_problems, _ = await asyncio.gather(
        check_tools(settings.ffmpeg, env), registry.refresh_all()
    )
    for problem in tool_problems:
        logger.error("{}: {}: channels cannot play until it is fixed", settings.path, problem)
    return AppState(
        settings=settings,
        metrics=metrics,
        channels=registry,
        pool=pool,
        monitor=monitor,
        logs=log_store,
        storage=(log_store.health, cache.health),
        tails=TailSlots(settings.server.max_log_tails, metrics),
        tool_problems=tuple(str(problem) for problem in tool_problems),
        started_at=time.monotonic(),
    )


async def _forever(run: Callable[[], Awaitable[None]], name: str) -> None:
    """Run a background loop; log and restart it if it fails, so one bug cannot stop it."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background task {} failed; restarting it in 1s", name)
            await asyncio.sleep(1.0)


async def _shutdown(state: AppState, tasks: list[asyncio.Task[None]], timeout: float) -> None:
    """Ordered, each step bounded: viewers -> background loops -> channels -> pool."""
    logger.info("exstream shutting down")
    state.logs.close_streams()
    state.channels.close_hubs()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*tasks, return_exceptions=True)
    await state.channels.stop_all(timeout)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await state.pool.close()
    logger.info("exstream stopped")
