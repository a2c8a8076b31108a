"""service/hls/sessions.py: a session is a viewer until it stops asking."""

from __future__ import annotations

import asyncio

import pytest

from service.hls.errors import TooManySessions
from service.hls.sessions import Sessions
from tests.polling import wait_until

TIMEOUT = 0.2


def make(limit: int = 10) -> tuple[Sessions, list[tuple[str, int]]]:
    events: list[tuple[str, int]] = []
    sessions = Sessions(
        TIMEOUT,
        limit,
        joined=lambda n: events.append(("joined", n)),
        left=lambda n: events.append(("left", n)),
    )
    return sessions, events


async def test_a_session_joins_once_and_leaves_after_the_timeout() -> None:
    sessions, events = make()
    assert sessions.touch(1, "a") is True
    assert sessions.touch(1, "a") is False
    assert sessions.touch(2, "a") is True  # the same token on another channel
    assert events == [("joined", 1), ("joined", 2)]
    await wait_until(lambda: len(events) == 4, 5, "both sessions to leave")
    assert sorted(events[2:]) == [("left", 1), ("left", 2)]
    assert len(sessions) == 0


async def test_requests_keep_a_session_alive() -> None:
    sessions, events = make()
    sessions.touch(1, "a")
    loop = asyncio.get_running_loop()
    for _ in range(6):  # well past one timeout, a request every half of it
        due = loop.time() + TIMEOUT / 2
        await wait_until(lambda: loop.time() >= due, 5, "half a timeout")  # noqa: B023
        sessions.touch(1, "a")
    assert events == [("joined", 1)]
    sessions.close()


async def test_too_many_sessions_are_refused() -> None:
    sessions, _ = make(limit=2)
    sessions.touch(1, "a")
    sessions.touch(1, "b")
    with pytest.raises(TooManySessions) as refused:
        sessions.touch(1, "c")
    assert refused.value.headers == {"Retry-After": "0"}
    sessions.close()
