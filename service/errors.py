from __future__ import annotations


class ExstreamError(Exception):
    """Base of every error exstream raises on purpose."""

    code = "internal_error"
    status_code = 500
    headers: dict[str, str] | None = None  # extra response headers, e.g. Retry-After

    @property
    def detail(self) -> str:
        return str(self)


class ConfigError(ExstreamError):
    code = "invalid_config"
    status_code = 400

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(path, problems)

    def __str__(self) -> str:
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"{self.path}: {len(self.problems)} problem(s)\n{lines}"

    def __repr__(self) -> str:
        return f"ConfigError(path={self.path!r}, problems={self.problems!r})"


class ChannelNotFound(ExstreamError):
    code = "channel_not_found"
    status_code = 404

    def __init__(self, channel: str) -> None:
        self.channel = channel
        super().__init__(channel)

    def __str__(self) -> str:
        return f"no channel {self.channel!r}"

    def __repr__(self) -> str:
        return f"ChannelNotFound(channel={self.channel!r})"


class ChannelUnavailable(ExstreamError):
    """The channel exists but cannot serve a viewer now (failed, or did not start in time)."""

    code = "channel_unavailable"
    status_code = 503

    def __init__(self, channel: int, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(channel, reason)

    def __str__(self) -> str:
        return f"channel {self.channel} is unavailable: {self.reason}"

    def __repr__(self) -> str:
        return f"ChannelUnavailable(channel={self.channel!r}, reason={self.reason!r})"


class ServiceStopping(ExstreamError):
    code = "service_stopping"
    status_code = 503

    def __str__(self) -> str:
        return "the service is shutting down"


class PoolError(ExstreamError):
    """A process slot could not be had; `reason` is the metric label."""

    reason = "error"
    status_code = 503


class PoolExhausted(PoolError):
    code = "pool_exhausted"
    reason = "exhausted"

    def __init__(self, capacity: int, waited: float) -> None:
        self.capacity = capacity
        self.waited = waited
        super().__init__(capacity, waited)

    def __str__(self) -> str:
        return f"all {self.capacity} process slots busy after waiting {self.waited:.1f}s"


class RateLimited(PoolError):
    code = "rate_limited"
    reason = "rate_limited"

    def __init__(self, waited: float) -> None:
        self.waited = waited
        super().__init__(waited)

    def __str__(self) -> str:
        return f"no start-up token after waiting {self.waited:.1f}s"


class SpawnFailed(PoolError):
    code = "spawn_failed"
    reason = "spawn_failed"

    def __init__(self, argv0: str, cause: str) -> None:
        self.argv0 = argv0
        self.cause = cause
        super().__init__(argv0, cause)

    def __str__(self) -> str:
        return f"could not start {self.argv0}: {self.cause}"


class ShortOfResources(SpawnFailed):
    """The machine, not the channel: out of file descriptors, memory or processes."""

    code = "short_of_resources"
    reason = "resources"

    def __str__(self) -> str:
        return f"could not start {self.argv0}: {self.cause} (the machine is short of resources)"


class PoolClosed(PoolError):
    code = "pool_closed"
    reason = "closed"

    def __str__(self) -> str:
        return "the process pool is closed"


class RestartBudgetExhausted(ExstreamError):
    code = "restart_budget_exhausted"
    status_code = 503

    def __init__(self, channel: int, restarts: int, window: float) -> None:
        self.channel = channel
        self.restarts = restarts
        self.window = window
        super().__init__(channel, restarts, window)

    def __str__(self) -> str:
        return (
            f"channel {self.channel}: {self.restarts} restarts within {self.window:g}s, "
            "budget spent"
        )


class ChannelNotRunning(ExstreamError):
    code = "channel_not_running"
    status_code = 409

    def __init__(self, channel: int) -> None:
        self.channel = channel
        super().__init__(channel)

    def __str__(self) -> str:
        return (
            f"channel {self.channel} has no process to restart (stopped, starting or"
            " restarting); open its stream to start it, or try again"
        )
