"""GCRA limits: exact in memory with a fake clock; shared through a real Redis."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from modelseal.gateway import Rate
from modelseal.gateway.ratelimit import MemoryRateLimiter, RedisRateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_memory_limit_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    lim = MemoryRateLimiter(clock)
    rate = Rate(5, 1)
    assert [lim.acquire_now("a", rate) == 0 for _ in range(7)] == [True] * 5 + [False] * 2
    assert 0 < lim.acquire_now("a", rate) <= 0.2
    assert lim.acquire_now("b", rate) == 0  # keys are independent
    clock.t += 0.2
    assert lim.acquire_now("a", rate) == 0
    assert lim.acquire_now("a", rate) > 0
    clock.t += 1.0
    assert sum(lim.acquire_now("a", rate) == 0 for _ in range(10)) == 5


def test_memory_limiter_bounds_its_table() -> None:
    clock = Clock()
    lim = MemoryRateLimiter(clock, max_keys=10)
    for i in range(10):
        lim.acquire_now(f"k{i}", Rate(1, 1))
    clock.t += 5
    lim.acquire_now("new", Rate(1, 1))
    assert len(lim._tat) == 1


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("MODELSEAL_TEST_REDIS_URL")
    if not url:
        pytest.skip("MODELSEAL_TEST_REDIS_URL not set (CI sets it; Redis on 127.0.0.1:6379)")
    return url


def test_redis_limit_is_shared_between_limiters(redis_url: str) -> None:
    async def go() -> list[bool]:
        prefix = f"modelseal:test:{uuid.uuid4().hex}:"
        a, b = (
            RedisRateLimiter(redis_url, prefix=prefix),
            RedisRateLimiter(redis_url, prefix=prefix),
        )
        try:
            rate = Rate(6, 60)
            return [await (a if i % 2 else b).acquire("alice", rate) == 0 for i in range(10)]
        finally:
            await a.close()
            await b.close()

    assert asyncio.run(go()) == [True] * 6 + [False] * 4


def test_redis_unreachable_fails_open_and_counts() -> None:
    async def go() -> tuple[float, int]:
        lim = RedisRateLimiter("redis://127.0.0.1:1/0")
        try:
            return await lim.acquire("alice", Rate(1, 60)), lim.errors
        finally:
            await lim.close()

    assert asyncio.run(go()) == (0.0, 1)
