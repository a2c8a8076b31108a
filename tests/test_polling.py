from __future__ import annotations

import itertools

import pytest

from tests.harness.network import discovery_port_held
from tests.polling import wait_for, wait_until


def test_wait_for_returns_the_first_truthy_result() -> None:
    calls = itertools.count()
    assert wait_for(lambda: next(calls) >= 2 and "done", 10, "the third call", 0) == "done"
    assert next(calls) == 3


def test_wait_for_fails_at_the_deadline_naming_what_and_the_last_error() -> None:
    def refused() -> None:
        raise OSError("refused")

    with pytest.raises(AssertionError, match=r"after 0s waiting for nothing \(last error: "):
        wait_for(refused, 0, "nothing", 0, ignore=(OSError,))
    with pytest.raises(OSError, match="refused"):
        wait_for(refused, 10, "an error it does not ignore", 0)


async def test_wait_until_lets_other_tasks_run_between_checks() -> None:
    calls = itertools.count()
    assert await wait_until(lambda: next(calls) == 3, 10, "the fourth call", 0) is True
    with pytest.raises(AssertionError, match="waiting for never"):
        await wait_until(lambda: None, 0, "never", 0)


def test_the_discovery_port_is_held_by_one_test_at_a_time() -> None:
    refused = pytest.raises(AssertionError, match="UDP 65001, held by another test")
    with discovery_port_held(), refused, discovery_port_held(timeout=0.3):
        pass
    with discovery_port_held(timeout=5):  # free again once the holder's block ended
        pass
