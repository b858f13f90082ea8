"""Per-key rate limits: GCRA (the generic cell rate algorithm), in memory or in Redis.

GCRA keeps one number per key (the theoretical arrival time) and needs no
background refill, so the Redis version is one small Lua script and one
round trip per request, atomic across any number of gateway replicas.
Redis's own clock (``TIME``) is the only clock, so replicas with skewed
clocks still share one budget. A limit of N per period admits bursts of N.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from modelseal.gateway.routes import Rate

log = logging.getLogger("modelseal.gateway")

_LUA: Final = """
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - tau > now then return math.ceil(tat - tau - now) end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""


class RateLimiter(Protocol):
    async def acquire(self, key_name: str, rate: Rate) -> float:
        """0 when the request may pass, else seconds until it would."""
        ...

    async def close(self) -> None: ...


def _gcra_params(rate: Rate) -> tuple[int, int]:
    """Emission interval and burst tolerance in microseconds."""
    interval = rate.period_s * 1_000_000 // rate.count
    return interval, rate.period_s * 1_000_000 - interval


class MemoryRateLimiter:
    """One process's limits. With several workers each holds its own budget: use Redis."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._tat: dict[str, int] = {}
        self._max_keys = max_keys

    async def acquire(self, key_name: str, rate: Rate) -> float:
        return self.acquire_now(key_name, rate)

    def acquire_now(self, key_name: str, rate: Rate) -> float:
        interval, tau = _gcra_params(rate)
        now = int(self._clock() * 1_000_000)
        tat = max(self._tat.get(key_name, now), now)
        if tat - tau > now:
            return (tat - tau - now) / 1_000_000
        if len(self._tat) >= self._max_keys and key_name not in self._tat:
            # keys past their budget hold no state worth keeping
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[key_name] = tat + interval
        return 0.0

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    """Limits shared by every gateway pointed at the same Redis.

    If Redis cannot be reached the request passes (fail open) and the error
    is logged and counted: an outage of the limiter must not become an
    outage of every model behind the gateway.
    """

    def __init__(self, url: str, *, prefix: str = "modelseal:ratelimit:") -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script = self._redis.register_script(_LUA)
        self._prefix = prefix
        self.errors = 0
        self._last_log = 0.0

    async def acquire(self, key_name: str, rate: Rate) -> float:
        interval, tau = _gcra_params(rate)
        try:
            wait_us = await self._script(
                keys=[f"{self._prefix}{rate}:{key_name}"], args=[interval, tau]
            )
        except Exception as exc:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_log > 10:
                self._last_log = now
                log.error("rate limiter: Redis unavailable (%s); letting requests pass", exc)
            return 0.0
        return int(wait_us) / 1_000_000

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
