"""Settings read once, at the edge: `channels.toml` plus `EXSTREAM_*` overrides.

Every problem is reported with the file and the key path (`channels[2].media`), all at
once, so that `exstream check` can list them and `serve` never starts half-configured.
"""

from __future__ import annotations

import glob
import ipaddress
import math
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from service import deviceid
from service.errors import ConfigError
from telemetry.logging import LOG_LEVELS

ChannelMode = Literal["on_demand", "always_on"]
MODES: tuple[ChannelMode, ...] = ("on_demand", "always_on")
LOG_FORMATS = ("json", "text")
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8410
    data_dir: Path = Path("data")
    public_url: str | None = None
    graceful_shutdown: float = 3.0
    log_level: str = "INFO"
    log_format: str = "json"
    access_log: bool = False
    max_connections: int = 0  # 0: derived from the open files limit
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    max_log_tails: int = 32
    api_token: str | None = field(default=None, repr=False)
    # Proxies (edge caches, a cluster's front door) whose X-Forwarded-For/-Proto and
    # X-Exstream-Owner are believed: addresses or networks.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class FfmpegSettings:
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    width: int = 1280
    height: int = 720
    fps: int = 25
    video_bitrate: int = 3_000_000
    audio_bitrate: int = 128_000
    preset: str = "veryfast"
    gop_seconds: float = 2.0
    probe_timeout: float = 30.0
    probe_concurrency: int = 4
    pass_env: tuple[str, ...] = ()  # more variables children get (fnmatch patterns)


@dataclass(frozen=True)
class PlayoutSettings:
    epoch: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    min_horizon: float = 6 * 3600.0
    rebuild_interval: float = 300.0
    segment_max: float = 3600.0


@dataclass(frozen=True)
class StreamSettings:
    buffer_bytes: int = 8 * 1024 * 1024
    send_timeout: float = 10.0
    chunk_interval: float = 0.1
    start_timeout: float = 10.0
    workahead: float = 5.0


@dataclass(frozen=True)
class HealthSettings:
    check_interval: float = 1.0
    stall_timeout: float = 15.0
    max_restarts: int = 5
    restart_window: float = 300.0
    cooldown: float = 600.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_in_flight: int = 8


@dataclass(frozen=True)
class PoolSettings:
    max_processes: int = 64
    spawn_rate: float = 5.0
    spawn_burst: int = 5
    acquire_timeout: float = 30.0


@dataclass(frozen=True)
class LogSettings:
    retention_days: float = 7.0
    max_rows: int = 1_000_000
    queue_size: int = 100_000


@dataclass(frozen=True)
class HdhomerunSettings:
    device_id: str | None = None  # None: made at random once, kept in the data directory
    friendly_name: str = "exstream"
    discovery: bool = True
    discovery_address: str = "0.0.0.0"
    discovery_port: int = 65001


@dataclass(frozen=True)
class GuideSettings:
    language: str = "en"
    hours: float = 24.0
    instance: str | None = None  # None: derived from the data directory


@dataclass(frozen=True)
class HlsSettings:
    segment_seconds: float = 4.0  # cut on the first keyframe that keeps within this
    window: int = 6  # segments in the live playlist
    max_sessions: int = 10_000  # HLS sessions open at once, all channels together


@dataclass(frozen=True)
class ClusterSettings:
    """Instances sharing one configuration, each running its share of the channels.

    After parsing, `members` and `peers` are complete (one URL per member, in order) and
    `instance` is this instance's name; no members: one instance runs every channel."""

    instance: str = ""  # "": EXSTREAM_INSTANCE, else the host name (a pod's name)
    instances: int = 0  # members <prefix>-0 .. <prefix>-(N-1), from `instance`'s prefix
    members: tuple[str, ...] = ()
    peer_url: str = ""  # how instances reach each other: {member} and {ordinal} filled in
    peers: tuple[str, ...] = ()  # or one URL per member, in the members' order
    check_interval: float = 1.0
    check_timeout: float = 1.0
    down_after: int = 3  # failed checks in a row before a peer's channels move

    @property
    def enabled(self) -> bool:
        return bool(self.members)


@dataclass(frozen=True)
class ChannelConfig:
    number: int
    name: str
    media: tuple[str, ...] = ()
    mode: ChannelMode = "on_demand"
    idle_grace: float = 30.0
    logo: str | None = None
    group: str | None = None
    shuffle: bool = False
    seed: int | None = None
    favorite: bool = True

    @property
    def always_on(self) -> bool:
        return self.mode == "always_on"


@dataclass(frozen=True)
class Settings:
    path: Path
    server: ServerSettings = ServerSettings()
    ffmpeg: FfmpegSettings = FfmpegSettings()
    playout: PlayoutSettings = PlayoutSettings()
    stream: StreamSettings = StreamSettings()
    health: HealthSettings = HealthSettings()
    pool: PoolSettings = PoolSettings()
    logs: LogSettings = LogSettings()
    guide: GuideSettings = GuideSettings()
    hdhomerun: HdhomerunSettings = HdhomerunSettings()
    cluster: ClusterSettings = ClusterSettings()
    hls: HlsSettings = HlsSettings()
    channels: tuple[ChannelConfig, ...] = ()
    warnings: tuple[str, ...] = ()

    def channel(self, number: int) -> ChannelConfig | None:
        return next((c for c in self.channels if c.number == number), None)


T = TypeVar("T")


class _Reader:
    """Collects problems while converting a TOML table into dataclass keyword arguments."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, f"expected a table, got {_kind(value)}")
            return {}
        return value

    def section(self, data: Mapping[str, Any], prefix: str, cls: type[T]) -> T:
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            path = f"{prefix}.{key}"
            spec = known.get(key)
            if spec is None or key in _ENV_ONLY:
                self.problem(
                    path, f"unknown key (known: {', '.join(sorted(set(known) - _ENV_ONLY))})"
                )
                continue
            converted = self.convert(path, value, getattr(cls(), key))
            if converted is not None:
                kwargs[key] = converted
        return cls(**kwargs)

    def convert(self, path: str, value: Any, default: Any) -> Any:
        check = _CHECKS.get(path.rsplit(".", 1)[-1])
        if isinstance(default, tuple):
            if not isinstance(value, list):
                self.problem(path, f"expected an array of strings, got {_kind(value)}")
            elif not all(isinstance(v, str) and v for v in value):
                self.problem(path, "every entry must be a non-empty string")
            else:
                return self._checked(path, tuple(value), check)
            return None
        if isinstance(default, bool):
            return self._typed(path, value, bool, "a boolean")
        if isinstance(default, int) and not isinstance(default, bool):
            number = self._typed(path, value, int, "an integer")
            return self._checked(path, number, check)
        if isinstance(default, float):
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    as_float = float(value)
                except OverflowError:  # TOML integers are unbounded in tomllib
                    as_float = math.inf
                if not math.isfinite(as_float):
                    self.problem(path, "must be a finite number")
                    return None
                return self._checked(path, as_float, check)
            self.problem(path, f"expected a number, got {_kind(value)}")
            return None
        if isinstance(default, Path):
            text = self._typed(path, value, str, "a string")
            return None if text is None else Path(text)
        if isinstance(default, datetime):
            return self._datetime(path, value)
        text = self._typed(path, value, str, "a string")
        return self._checked(path, text, check)

    def _typed(self, path: str, value: Any, kind: type[T], name: str) -> T | None:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        self.problem(path, f"expected {name}, got {_kind(value)}")
        return None

    def _checked(self, path: str, value: T | None, check: _Check | None) -> T | None:
        if value is None or check is None:
            return value
        message = check[1]
        if not check[0](value):
            self.problem(path, message)
            return None
        return value

    def _datetime(self, path: str, value: Any) -> datetime | None:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                self.problem(path, f"not an RFC 3339 date-time: {value!r}")
                return None
        else:
            self.problem(path, f"expected a date-time, got {_kind(value)}")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_Check = tuple[Callable[[Any], bool], str]
_MEMBER_NAME = re.compile(r"[-a-zA-Z0-9]+(\.[-a-zA-Z0-9]+)*")
_ORDINAL = re.compile(r"(?P<prefix>.+)-(?P<ordinal>[0-9]+)")
_positive: _Check = (lambda v: v > 0, "must be greater than 0")
_CHECKS: dict[str, _Check] = {
    "port": (lambda v: 0 <= v <= 65535, "must be a port number (0-65535)"),
    "width": (lambda v: 16 <= v <= 7680 and v % 2 == 0, "must be an even number of pixels"),
    "height": (lambda v: 16 <= v <= 4320 and v % 2 == 0, "must be an even number of pixels"),
    "fps": (lambda v: 1 <= v <= 120, "must be between 1 and 120"),
    "log_level": (lambda v: v.upper() in LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}"),
    "log_format": (lambda v: v in LOG_FORMATS, f"must be one of {', '.join(LOG_FORMATS)}"),
    "mode": (lambda v: v in MODES, f"must be one of {', '.join(MODES)}"),
    "number": (lambda v: 1 <= v <= 99999, "must be between 1 and 99999"),
    "name": (lambda v: bool(v.strip()), "must not be empty"),
    "idle_grace": (lambda v: v >= 0, "must be 0 or more"),
    "min_horizon": (lambda v: v >= 60, "must be at least 60 seconds"),
    "max_restarts": (lambda v: v >= 1, "must be at least 1"),
    "spawn_burst": (lambda v: v >= 1, "must be at least 1"),
    "max_processes": (lambda v: v >= 1, "must be at least 1"),
    "max_in_flight": (lambda v: v >= 1, "must be at least 1"),
    "probe_concurrency": (lambda v: v >= 1, "must be at least 1"),
    "buffer_bytes": (lambda v: v >= 188 * 1024, "must be at least 192512 (1024 packets)"),
    "workahead": (lambda v: 1 <= v <= 60, "must be between 1 and 60 seconds"),
    "max_rows": (lambda v: v >= 1000, "must be at least 1000"),
    "pass_env": (
        lambda v: not any(p.upper().startswith("EXSTREAM_") for p in v),
        "EXSTREAM_* variables are never passed to ffmpeg",
    ),
    "queue_size": (lambda v: v >= 1000, "must be at least 1000"),
    "max_connections": (lambda v: v >= 0, "must be 0 (derived from the open files limit) or more"),
    "max_header_bytes": (lambda v: v >= 1024, "must be at least 1024"),
    "max_log_tails": (lambda v: v >= 1, "must be at least 1"),
    "language": (
        lambda v: re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", v) is not None,
        "must be a language code such as en, fr or pt-BR",
    ),
    "hours": (lambda v: 1 <= v <= 336, "must be between 1 and 336 (14 days)"),
    "instance": (
        lambda v: re.fullmatch(r"[-a-zA-Z0-9]+(\.[-a-zA-Z0-9]+)*", v) is not None,
        "must be letters, digits and hyphens, in dot-separated parts (e.g. living-room)",
    ),
    "device_id": (
        deviceid.is_valid_text,
        "must be 8 hex digits ending in the HDHomeRun check digit, e.g. 1057A9B2 (not"
        " 00000000, FFFFFFFF or a first-generation tuner's); leave it out to have one made",
    ),
    "friendly_name": (
        lambda v: bool(v.strip()) and len(v) <= 64 and v.isprintable(),
        "must be 1 to 64 printable characters",
    ),
    "discovery_address": (
        lambda v: _is_ipv4(v),
        "must be an IPv4 address (0.0.0.0: every interface)",
    ),
    "trusted_proxies": (
        lambda v: all(_is_network(e) for e in v),
        "every entry must be an IP address or network, e.g. 127.0.0.1 or 10.0.0.0/8",
    ),
    "discovery_port": (lambda v: 1 <= v <= 65535, "must be a port number (1-65535)"),
    "instances": (lambda v: 0 <= v <= 1000, "must be between 0 (no cluster) and 1000"),
    "members": (
        lambda v: all(_MEMBER_NAME.fullmatch(m) for m in v) and len(set(v)) == len(v),
        "must be distinct names of letters, digits, hyphens and dots (e.g. exstream-0)",
    ),
    "peer_url": (
        lambda v: _is_peer_url(v.replace("{member}", "m").replace("{ordinal}", "0")),
        "must be an http:// URL with no path, e.g. http://{member}.exstream:8410",
    ),
    "peers": (
        lambda v: all(_is_peer_url(p) for p in v),
        "every entry must be an http:// URL with no path, e.g. http://10.0.0.5:8410",
    ),
    "down_after": (lambda v: v >= 1, "must be at least 1"),
    "segment_seconds": (lambda v: 1 <= v <= 60, "must be between 1 and 60 seconds"),
    "window": (lambda v: 3 <= v <= 100, "must be between 3 and 100 segments"),
    "max_sessions": (lambda v: v >= 1, "must be at least 1"),
    **{
        key: _positive
        for key in (
            "graceful_shutdown",
            "header_timeout",
            "video_bitrate",
            "audio_bitrate",
            "gop_seconds",
            "probe_timeout",
            "rebuild_interval",
            "segment_max",
            "send_timeout",
            "chunk_interval",
            "start_timeout",
            "check_interval",
            "stall_timeout",
            "restart_window",
            "cooldown",
            "backoff_initial",
            "backoff_max",
            "spawn_rate",
            "acquire_timeout",
            "retention_days",
            "check_timeout",
        )
    },
}
_ENV_ONLY = frozenset({"api_token"})
_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "ffmpeg": FfmpegSettings,
    "playout": PlayoutSettings,
    "stream": StreamSettings,
    "health": HealthSettings,
    "pool": PoolSettings,
    "logs": LogSettings,
    "guide": GuideSettings,
    "hdhomerun": HdhomerunSettings,
    "cluster": ClusterSettings,
    "hls": HlsSettings,
}
_ENV_KEYS: dict[str, str] = {
    "HOST": "host",
    "PORT": "port",
    "DATA_DIR": "data_dir",
    "PUBLIC_URL": "public_url",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "API_TOKEN": "api_token",
}


def _is_peer_url(text: str) -> bool:
    return re.fullmatch(r"http://[-a-zA-Z0-9.]+(:[0-9]{1,5})?/?", text) is not None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _reason(exc: Exception) -> str:
    # OSError's str() repeats the (possibly huge) file name; its strerror does not.
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read `path` and the `EXSTREAM_*` overrides; ConfigError lists every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"invalid TOML: {exc}"]) from None
    return parse_settings(data, path, environ or {})


def parse_settings(data: Mapping[str, Any], path: Path, environ: Mapping[str, str]) -> Settings:
    reader = _Reader()
    for key in data:
        if key not in _SECTIONS and key != "channels":
            reader.problem(key, f"unknown section (known: {', '.join([*_SECTIONS, 'channels'])})")
    sections = {
        name: reader.section(reader.table(data, name), name, cls) for name, cls in _SECTIONS.items()
    }
    server = _apply_environ(reader, sections["server"], environ)
    base = path.resolve().parent
    if not server.data_dir.is_absolute():
        try:
            server = replace(server, data_dir=(base / server.data_dir).resolve())
        except (OSError, ValueError) as exc:
            reader.problem("server.data_dir", f"invalid path: {_reason(exc)}")
    channels = _read_channels(reader, data.get("channels", []), base)
    health: HealthSettings = sections["health"]
    ffmpeg: FfmpegSettings = sections["ffmpeg"]
    if sections["hls"].segment_seconds < ffmpeg.gop_seconds:
        # A segment holds at least one whole GOP: it starts on a keyframe.
        reader.problem("hls.segment_seconds", "must be at least ffmpeg.gop_seconds")
    if health.backoff_initial > health.backoff_max:
        reader.problem("health.backoff_initial", "must not exceed health.backoff_max")
    cluster = _read_cluster(reader, sections["cluster"], environ)
    if reader.problems:
        raise ConfigError(str(path), reader.problems)
    return Settings(
        path=path,
        server=server,
        ffmpeg=sections["ffmpeg"],
        playout=sections["playout"],
        stream=sections["stream"],
        health=health,
        pool=sections["pool"],
        logs=sections["logs"],
        guide=sections["guide"],
        hdhomerun=sections["hdhomerun"],
        cluster=cluster,
        hls=sections["hls"],
        channels=channels,
        warnings=tuple(reader.warnings),
    )


def _apply_environ(
    reader: _Reader, server: ServerSettings, environ: Mapping[str, str]
) -> ServerSettings:
    changes: dict[str, Any] = {}
    for suffix, key in _ENV_KEYS.items():
        raw = environ.get(f"EXSTREAM_{suffix}")
        if raw is None or raw == "":
            continue
        name = f"EXSTREAM_{suffix}"
        if key == "port":
            try:
                value: Any = int(raw)
            except ValueError:
                reader.problem(name, f"expected an integer, got {raw!r}")
                continue
            value = reader._checked(name, value, _CHECKS["port"])
        elif key == "data_dir":
            value = Path(raw)
        elif key == "log_level":
            value = reader._checked(name, raw.upper(), _CHECKS["log_level"])
        elif key == "log_format":
            value = reader._checked(name, raw.lower(), _CHECKS["log_format"])
        else:
            value = raw
        if value is not None:
            changes[key] = value
    server = replace(server, **changes)
    return replace(server, log_level=server.log_level.upper())


def _read_cluster(
    reader: _Reader, cluster: ClusterSettings, environ: Mapping[str, str]
) -> ClusterSettings:
    """The members and their URLs in full, and this instance's name among them."""
    instance = environ.get("EXSTREAM_INSTANCE") or cluster.instance or socket.gethostname()
    if not (cluster.instances or cluster.members):
        return replace(cluster, instance=instance, peers=())
    if not _MEMBER_NAME.fullmatch(instance):
        reader.problem("cluster.instance", f"{instance!r}: not letters, digits and hyphens")
        return cluster
    members = cluster.members
    if cluster.instances and members:
        reader.problem("cluster.members", "give cluster.instances or cluster.members, not both")
        return cluster
    if cluster.instances:
        match = _ORDINAL.fullmatch(instance)
        if match is None or int(match["ordinal"]) >= cluster.instances:
            reader.problem(
                "cluster.instance",
                f"{instance!r} must end in -<ordinal> below cluster.instances"
                f" ({cluster.instances}), as a StatefulSet's pods do (exstream-0, exstream-1)",
            )
            return cluster
        members = tuple(f"{match['prefix']}-{i}" for i in range(cluster.instances))
    elif instance not in members:
        reader.problem("cluster.instance", f"{instance!r} is not one of cluster.members")
        return cluster
    peers = cluster.peers
    if peers and len(peers) != len(members):
        reader.problem(
            "cluster.peers", f"expected one URL per member ({len(members)}), got {len(peers)}"
        )
        return cluster
    if not peers:
        if not cluster.peer_url:
            reader.problem("cluster.peer_url", "missing: give peer_url or peers")
            return cluster
        peers = tuple(
            cluster.peer_url.replace("{member}", name).replace("{ordinal}", str(i))
            for i, name in enumerate(members)
        )
    return replace(
        cluster, instance=instance, members=members, peers=tuple(p.rstrip("/") for p in peers)
    )


def _read_channels(reader: _Reader, raw: Any, base: Path) -> tuple[ChannelConfig, ...]:
    if not isinstance(raw, list):
        reader.problem("channels", f"expected an array of tables ([[channels]]), got {_kind(raw)}")
        return ()
    channels: list[ChannelConfig] = []
    seen: dict[int, int] = {}
    for index, table in enumerate(raw):
        prefix = f"channels[{index}]"
        if not isinstance(table, dict):
            reader.problem(prefix, f"expected a table, got {_kind(table)}")
            continue
        before = len(reader.problems)
        for required in ("number", "name"):
            if required not in table:
                reader.problem(f"{prefix}.{required}", "missing")
        media = table.get("media", [])
        if isinstance(media, str):
            media = [media]
        rest = {k: v for k, v in table.items() if k != "media"}
        defaults = ChannelConfig(number=0, name="")
        kwargs: dict[str, Any] = {}
        for key, value in rest.items():
            path = f"{prefix}.{key}"
            if key not in {f.name for f in fields(ChannelConfig)}:
                known = ", ".join(f.name for f in fields(ChannelConfig))
                reader.problem(path, f"unknown key (known: {known})")
                continue
            default = getattr(defaults, key)
            if key in ("logo", "group"):
                default = ""
            elif key == "seed":
                default = 0
            converted = reader.convert(path, value, default)
            if converted is not None:
                kwargs[key] = converted
        paths = _read_media(reader, f"{prefix}.media", media, base)
        # Checked even when the channel has other problems, so all of them show at once.
        number = kwargs.get("number")
        if number is not None:
            if number in seen:
                reader.problem(
                    f"{prefix}.number",
                    f"duplicate channel number {number} (also channels[{seen[number]}])",
                )
            else:
                seen[number] = index
        if len(reader.problems) > before:
            continue
        channels.append(ChannelConfig(media=paths, **kwargs))
    return tuple(channels)


def _read_media(reader: _Reader, prefix: str, media: Any, base: Path) -> tuple[str, ...]:
    if not isinstance(media, list):
        reader.problem(prefix, f"expected a path or an array of paths, got {_kind(media)}")
        return ()
    paths: list[str] = []
    for index, entry in enumerate(media):
        key = f"{prefix}[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            reader.problem(key, f"expected a non-empty path, got {_kind(entry)}")
            continue
        try:
            expanded = Path(entry).expanduser()
            full = expanded if expanded.is_absolute() else base / expanded
            if GLOB_CHARS & set(entry):
                if not glob.glob(str(full), recursive=True):  # noqa: PTH207 (absolute patterns)
                    reader.warnings.append(f"{key}: pattern {entry!r} matches nothing yet")
            elif not full.exists():
                what = "directory" if entry.endswith("/") or not full.suffix else "file"
                reader.problem(key, f"no such {what} {entry!r}")
                continue
        except (OSError, ValueError, RuntimeError) as exc:
            # Unknown ~user, a name too long for the file system, ...
            reader.problem(key, f"invalid path: {_reason(exc)}")
            continue
        paths.append(str(full))
    return tuple(paths)
