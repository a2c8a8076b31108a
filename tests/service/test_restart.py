from __future__ import annotations

import asyncio

import pytest

from service.errors import RestartBudgetExhausted
from service.restart import RestartPolicy
from tests.conftest import FakeClock


def policy(clock: FakeClock, **kwargs: float) -> RestartPolicy:
    options: dict[str, float] = {"backoff_initial": 0.5, "backoff_max": 8.0, "max_in_flight": 8}
    options.update(kwargs)
    return RestartPolicy(
        3,
        60.0,
        backoff_initial=options["backoff_initial"],
        backoff_max=options["backoff_max"],
        max_in_flight=int(options["max_in_flight"]),
        clock=clock,
        sleep=clock.sleep,
    )


async def test_budget_refuses_after_max_restarts_in_the_window(clock: FakeClock) -> None:
    p = policy(clock)
    attempts = []
    for _ in range(3):
        admission = await p.admit("7")
        attempts.append(admission.attempt)
        admission.release()
    assert attempts == [1, 2, 3]
    with pytest.raises(RestartBudgetExhausted) as error:
        await p.admit("7")
    assert error.value.channel == 7 and error.value.restarts == 3
    assert "budget spent" in str(error.value)
    other = await p.admit("8")  # budgets are per channel
    assert other.attempt == 1


async def test_budget_slides_with_the_window(clock: FakeClock) -> None:
    p = policy(clock)
    for _ in range(3):
        (await p.admit("1")).release()
    clock.advance(61)
    assert p.recent("1") == 0
    assert (await p.admit("1")).attempt == 1


async def test_operator_reset_clears_the_history(clock: FakeClock) -> None:
    p = policy(clock)
    for _ in range(3):
        (await p.admit("1")).release()
    p.reset("1")
    assert (await p.admit("1")).attempt == 1


def test_backoff_grows_with_jitter_within_bounds(clock: FakeClock) -> None:
    p = policy(clock)
    for attempt in range(1, 8):
        samples = [p.backoff(attempt) for _ in range(200)]
        base = min(0.5 * 2 ** (attempt - 1), 8.0)
        assert all(base <= s <= min(base + 1.0, 8.0) + 1e-9 for s in samples), attempt
        if base < 8.0:
            assert len(set(samples)) > 1  # jitter
    assert p.backoff(2) > p.backoff(1) - 1.0


async def test_admission_sleeps_the_backoff(clock: FakeClock) -> None:
    p = policy(clock)
    (await p.admit("1")).release()
    (await p.admit("1")).release()
    assert len(clock.sleeps) == 2
    assert 0.5 <= clock.sleeps[0] <= 1.5
    assert 1.0 <= clock.sleeps[1] <= 2.0


async def test_global_in_flight_cap(clock: FakeClock) -> None:
    p = policy(clock, max_in_flight=2)
    first = await p.admit("1")
    second = await p.admit("2")
    third = asyncio.create_task(p.admit("3"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done() and p.in_flight == 2
    first.release()
    first.release()  # idempotent
    admission = await asyncio.wait_for(third, 1)
    assert p.in_flight == 2
    second.release()
    admission.release()
    assert p.in_flight == 0


async def test_a_deferred_spawn_backs_off_without_spending_the_budget(clock: FakeClock) -> None:
    p = policy(clock)
    for failures in range(1, 6):
        await p.defer(failures)
    assert p.recent("1") == 0 and p.in_flight == 0
    assert len(clock.sleeps) == 5  # doubling, plus up to 1 s of jitter, at most backoff_max
    assert all(0.5 * 2**i <= s <= min(0.5 * 2**i + 1, 8.0) for i, s in enumerate(clock.sleeps))
    assert (await p.admit("1")).attempt == 1  # the budget is whole
