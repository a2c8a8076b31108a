"""HLS viewers: a session per player, alive while it keeps reloading the playlist.

HLS has no connection to hold, so a viewer is a session that ends when its player has
not asked for the playlist for `timeout` seconds (a few target durations: a live player
reloads it about once per target duration). Each session is one timer on the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass

from service.hls.errors import TooManySessions


@dataclass(eq=False)
class _Session:
    channel: int
    expiry: asyncio.TimerHandle | None = None


class Sessions:
    def __init__(
        self,
        timeout: float,
        limit: int,
        *,
        joined: Callable[[int], None],
        left: Callable[[int], None],
    ) -> None:
        self.timeout = timeout
        self.limit = limit
        self._joined = joined
        self._left = left
        self._sessions: dict[tuple[int, str], _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def touch(self, channel: int, key: str) -> bool:
        """A request of session `key` on `channel`: True if it starts a session."""
        session = self._sessions.get((channel, key))
        fresh = session is None
        if session is None:
            if len(self._sessions) >= self.limit:
                raise TooManySessions(self.limit, round(self.timeout))
            session = self._sessions[channel, key] = _Session(channel)
            self._joined(channel)
        elif session.expiry is not None:
            session.expiry.cancel()
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_later(
            self.timeout, self._expire, channel, key, context=contextvars.Context()
        )
        return fresh

    def _expire(self, channel: int, key: str) -> None:
        if self._sessions.pop((channel, key), None) is not None:
            self._left(channel)

    def close(self) -> None:
        """End every session without telling anyone (shutdown)."""
        for session in self._sessions.values():
            if session.expiry is not None:
                session.expiry.cancel()
        self._sessions.clear()
