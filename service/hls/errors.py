"""What an HLS request can be refused for, beyond the channel errors."""

from __future__ import annotations

from service.errors import ChannelUnavailable, ExstreamError


class HlsUnavailable(ChannelUnavailable):
    """The channel cannot give segments now; players retry after `Retry-After`."""

    def __init__(self, channel: int, reason: str, retry_after: int) -> None:
        super().__init__(channel, reason)
        self.headers = {"Retry-After": str(retry_after)}


class SegmentNotFound(ExstreamError):
    code = "segment_not_found"
    status_code = 404

    def __init__(self, channel: int, name: str) -> None:
        self.channel = channel
        self.name = name
        super().__init__(channel, name)

    def __str__(self) -> str:
        return f"channel {self.channel} holds no segment {self.name[:80]!r} (it left the playlist)"

    def __repr__(self) -> str:
        return f"SegmentNotFound(channel={self.channel!r}, name={self.name!r})"


class InvalidSession(ExstreamError):
    code = "invalid_session"
    status_code = 400

    def __init__(self, raw: str) -> None:
        self.raw = raw
        super().__init__(raw)

    def __str__(self) -> str:
        return "session must be 8 to 64 letters, digits, '-' or '_'"

    def __repr__(self) -> str:
        return f"InvalidSession(raw={self.raw[:80]!r})"


class TooManySessions(ExstreamError):
    code = "too_many_sessions"
    status_code = 503

    def __init__(self, limit: int, retry_after: int) -> None:
        self.limit = limit
        self.headers = {"Retry-After": str(retry_after)}
        super().__init__(limit)

    def __str__(self) -> str:
        return f"{self.limit} HLS sessions are open, the most [hls] max_sessions allows"

    def __repr__(self) -> str:
        return f"TooManySessions(limit={self.limit!r})"
