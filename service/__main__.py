"""The `exstream` command: serve, check a configuration, or write a demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvicorn
from loguru import logger

from service import __version__
from service.config import Settings, load_settings
from service.errors import ConfigError
from service.exposure import exposure_warning
from service.tools import ToolProblem

DEFAULT_CONFIG = "channels.toml"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOG_FLUSH_TIMEOUT = 2.0  # at exit, for stderr to take the last lines; a stalled one is left

ENVIRONMENT = """\
Environment: EXSTREAM_HOST, EXSTREAM_PORT, EXSTREAM_DATA_DIR, EXSTREAM_PUBLIC_URL,
EXSTREAM_LOG_LEVEL, EXSTREAM_LOG_FORMAT (json|text), EXSTREAM_API_TOKEN override the
[server] table; EXSTREAM_CONFIG names the config file. OpenTelemetry export is set with
the standard OTEL_* variables. See README.md for every key.
"""
DESCRIPTION = f"""\
exstream turns media files into live TV channels served as HTTP MPEG-TS.

  exstream serve --config channels.toml   run the service
  exstream check channels.toml            validate a configuration and probe its media
  exstream demo data/demo --serve         write demo media and a config, then serve it

{ENVIRONMENT}"""
SERVE = """\
Serve the channels of a configuration over HTTP. A configuration with problems is
reported (one `<file>: <key path>: <message>` line each) and nothing is started:
exit status 2.
"""
DEMO = """\
Write demo media (made with ffmpeg's lavfi sources: nothing is downloaded) and a
channels.toml for three channels into DIR; with --serve, serve it afterwards. An existing
channels.toml that differs from the demo's (you edited it) is kept: --force rewrites it.
"""
CHECK = """\
Validate a configuration, try the configured ffmpeg and ffprobe (that they run and
encode with the configured preset), and probe its media with ffprobe, without serving.
Problems are printed as `<file>: <key path>: <message>` lines (exit status 2);
unreadable or corrupt media files are listed as warnings (exit status 0).
"""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="exstream",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"exstream {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter
    serve = commands.add_parser(
        "serve", help="run the service", description=SERVE, epilog=ENVIRONMENT,
        formatter_class=raw,
    )  # fmt: skip
    serve.add_argument(
        "--config",
        default=os.environ.get("EXSTREAM_CONFIG", DEFAULT_CONFIG),
        help="path of channels.toml (default: $EXSTREAM_CONFIG or ./channels.toml)",
    )
    check = commands.add_parser(
        "check", help="validate a configuration; exit 2 when it has problems",
        description=CHECK, epilog=ENVIRONMENT, formatter_class=raw,
    )  # fmt: skip
    check.add_argument(
        "config",
        nargs="?",
        default=os.environ.get("EXSTREAM_CONFIG", DEFAULT_CONFIG),
        help="path of channels.toml (default: $EXSTREAM_CONFIG or ./channels.toml)",
    )
    check.add_argument("--no-scan", action="store_true", help="do not probe the media files")
    demo = commands.add_parser(
        "demo", help="write demo media and channels.toml into DIR (and serve it with --serve)",
        description=DEMO, formatter_class=raw,
    )  # fmt: skip
    demo.add_argument("dir", type=Path)
    demo.add_argument("--host", default="127.0.0.1", help="[server] host of a new config")
    demo.add_argument("--port", type=int, default=8410, help="[server] port of a new config")
    demo.add_argument("--serve", action="store_true", help="serve the demo afterwards")
    demo.add_argument(
        "--force", action="store_true", help="rewrite DIR/channels.toml even if it was edited"
    )
    return root


def _load(path: str) -> Settings:
    try:
        return load_settings(path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


class ListenError(Exception):
    def __str__(self) -> str:
        host, port, reason = self.args
        return f"cannot listen on {host}:{port}: {reason}"


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket, made before anything starts: a port in use is a one-line
    error (exit 2), and "ready" is only said once clients can connect."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(host, port, exc.strerror or str(exc)) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(host, port, exc.strerror or str(exc)) from None
    return sock


class Server(uvicorn.Server):
    """Ends endless responses (log tails, streams) when shutdown begins: uvicorn runs the
    lifespan shutdown only after waiting for open connections, which would be too late."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)


def serve(settings: Settings) -> int:
    from opentelemetry import trace

    from service.app import begin_shutdown, create_app, log_store_of, metrics_of
    from service.protocol import (
        ConnectionGuard,
        client_limits,
        protocol_class,
        raise_open_files_limit,
    )
    from telemetry.logging import configure_logging, flush_logging
    from telemetry.tracing import TracingConfigError, configure_tracing, shutdown_tracing

    server_settings = settings.server
    try:
        provider = configure_tracing(os.environ, version=__version__)
    except TracingConfigError as exc:
        print(f"exstream: {exc}", file=sys.stderr)
        return 2
    trace.set_tracer_provider(provider)
    app = create_app(settings, tracer_provider=provider)
    store = log_store_of(app)
    metrics = metrics_of(app)
    # In the background: a stderr that stops taking lines must never block the event loop.
    configure_logging(
        server_settings.log_level,
        server_settings.log_format,
        sinks=[store.append],
        background=True,
        on_drop=lambda reason: metrics.log_lines_dropped.labels(reason=reason).inc(),
    )
    for warning in settings.warnings:
        logger.warning("{}: {}", settings.path, warning)
    exposed = exposure_warning(server_settings)
    if exposed is not None:
        logger.warning("{}", exposed)
    try:
        listener = listen(server_settings.host, server_settings.port)
    except ListenError as exc:
        flush_logging(LOG_FLUSH_TIMEOUT)  # the warnings above first
        logger.remove()
        print(f"exstream: {exc}", file=sys.stderr)
        return 2
    open_files = raise_open_files_limit()
    metrics.open_files_limit.set(open_files)
    guard = ConnectionGuard(client_limits(settings, open_files), metrics)
    config = uvicorn.Config(
        app,
        host=server_settings.host,
        port=server_settings.port,
        http=protocol_class(guard),
        proxy_headers=False,  # the app's TrustedProxies reads them, from trusted_proxies only
        log_config=None,
        access_log=server_settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(server_settings.graceful_shutdown)),
    )
    server = Server(config, on_shutdown=lambda: begin_shutdown(app))
    metrics.http_connections.set_function(lambda: len(server.server_state.connections))
    # uvicorn re-raises the signal that stopped it; catch that re-raise, so buffered
    # spans and log lines are flushed before the process ends the way it would have.
    captured: list[int] = []
    previous = {sig: signal.signal(sig, lambda n, _: captured.append(n)) for sig in STOP_SIGNALS}
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        shutdown_tracing(provider)
        flush_logging(LOG_FLUSH_TIMEOUT)
        logger.remove()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for number in captured:
        signal.raise_signal(number)
    return 0 if server.started else 1


def check(settings: Settings, scan: bool) -> int:
    for warning in settings.warnings:
        print(f"{settings.path}: warning: {warning}", file=sys.stderr)
    exposed = exposure_warning(settings.server)
    if exposed is not None:
        print(f"{settings.path}: warning: {exposed}", file=sys.stderr)
    problems = asyncio.run(_check_tools(settings))
    for problem in problems:
        print(f"{settings.path}: {problem}", file=sys.stderr)
    if problems:
        return 2
    if scan:
        asyncio.run(_check_media(settings))
    print(f"{settings.path}: ok, {len(settings.channels)} channel(s)")
    return 0


async def _check_tools(settings: Settings) -> list[ToolProblem]:
    from service.children import child_environment
    from service.tools import check_tools

    env = child_environment(os.environ, pass_env=settings.ffmpeg.pass_env)
    return await check_tools(settings.ffmpeg, env)


async def _check_media(settings: Settings) -> None:
    from service.media import MediaScanner, ProbeCache

    cache = ProbeCache(None)
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"\r  probing media: {done}/{total}", end="", file=sys.stderr, flush=True)

    scanner = MediaScanner(
        settings.ffmpeg.ffprobe,
        cache,
        timeout=settings.ffmpeg.probe_timeout,
        concurrency=settings.ffmpeg.probe_concurrency,
        progress=progress,
    )
    for index, channel in enumerate(settings.channels):
        result = await scanner.scan(channel.media)
        if tty:
            print(file=sys.stderr)
        for skipped in result.skipped:
            print(
                f"{settings.path}: warning: channels[{index}].media: skipping {skipped.path}"
                f" ({skipped.reason}: {skipped.detail})",
                file=sys.stderr,
            )
        if not result.items:
            print(
                f"{settings.path}: warning: channels[{index}]: no playable media,"
                " the channel will show the offline slate",
                file=sys.stderr,
            )
    cache.close()


def playable_urls(settings: Settings) -> str:
    server = settings.server
    lines = []
    host = server.host
    if not server.public_url and host in WILDCARD_HOSTS:
        lines.append(f"listening on all interfaces ({host}): from other devices use this"
                     " machine's address instead of 127.0.0.1")  # fmt: skip
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    base = server.public_url or f"http://{host}:{server.port}"
    lines += [
        f"playlist (VLC, Jellyfin M3U tuner): {base}/iptv/channels.m3u",
        f"guide (XMLTV):                      {base}/iptv/xmltv.xml",
        f"HDHomeRun device (Plex, Jellyfin):  {base}",
    ]
    lines += [
        f"channel {c.number} ({c.name}): {base}/stream/{c.number}.ts" for c in settings.channels
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        from service.demo import write_demo

        config, written = write_demo(args.dir, host=args.host, port=args.port, force=args.force)
        settings = _load(str(config))
        print(f"wrote {config}" if written else f"kept {config} (edited; --force rewrites it)")
        print(playable_urls(settings))
        return serve(settings) if args.serve else 0
    settings = _load(args.config)
    if args.command == "check":
        return check(settings, scan=not args.no_scan)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
