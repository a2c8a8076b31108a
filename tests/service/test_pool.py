from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence

import pytest
from prometheus_client import CollectorRegistry

from service.errors import ShortOfResources, SpawnFailed
from service.pool import ProcessPool
from service.process import ManagedProcess
from service.ratelimit import TokenBucket
from telemetry.metrics import Metrics


class Unstartable(ManagedProcess):
    """A process whose start fails with `code`, as Popen does when the machine or the
    program is at fault."""

    code = errno.EMFILE

    async def start(self) -> None:
        raise OSError(self.code, os.strerror(self.code))


def pool_failing_with(code: int) -> ProcessPool:
    def factory(argv: Sequence[str], *, env: Mapping[str, str]) -> ManagedProcess:
        process = Unstartable(argv, env=env)
        process.code = code
        return process

    bucket = TokenBucket(100, 100)
    return ProcessPool(2, bucket, Metrics(CollectorRegistry()), process_factory=factory)


def failures(pool: ProcessPool, reason: str) -> float:
    value = pool.metrics.registry.get_sample_value(
        "exstream_pool_acquire_failures_total", {"reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN])
async def test_a_spawn_the_machine_has_no_resources_for_is_its_own_failure(code: int) -> None:
    pool = pool_failing_with(code)
    with pytest.raises(ShortOfResources) as error:
        async with pool.spawn("1", ["ffmpeg", "-version"]):
            pass
    assert error.value.reason == "resources"
    assert os.strerror(code) in str(error.value)
    assert (failures(pool, "resources"), failures(pool, "spawn_failed")) == (1, 0)
    assert pool.in_use == 0  # the slot is back


async def test_a_program_that_cannot_be_run_is_a_spawn_failure() -> None:
    pool = pool_failing_with(errno.ENOENT)
    with pytest.raises(SpawnFailed) as error:
        async with pool.spawn("1", ["ffmpeg", "-version"]):
            pass
    assert not isinstance(error.value, ShortOfResources)
    assert (failures(pool, "resources"), failures(pool, "spawn_failed")) == (0, 1)
    assert pool.in_use == 0


async def test_the_pool_gives_its_children_the_environment_it_was_given(tmp_path: str) -> None:
    env = {"PATH": os.defpath, "EXSTREAM_OWNER": "/srv/data"}
    pool = ProcessPool(1, TokenBucket(100, 100), Metrics(CollectorRegistry()), env=env)
    async with pool.spawn("1", ["cat", "/proc/self/environ"]) as proc:
        output = await proc.stdout.read()
        assert await proc.wait() == 0
    assert dict(v.split("=", 1) for v in output.decode().split("\0") if v) == env
