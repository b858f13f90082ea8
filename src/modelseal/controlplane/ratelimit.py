"""Request rate limits on the API: per credential, and per address for anonymous calls.

Why: the admin API is token-first and scripts loop; a runaway script or a
leaked token should slow down, not take the database with it. The anonymous
routes (online activation, self-service release, login) are the ones a
stranger can reach, so they are limited per client address.

How: a token bucket per key, in this process's memory (``capacity`` requests
at once, refilled at ``capacity`` per minute). A request with a bearer token
or a session cookie is keyed by a hash of that credential (one token cannot
exhaust another's budget, and a credential is never kept in memory as such);
any other request by the client address of the connection (no proxy header
is trusted: behind a reverse proxy every client shares the proxy's bucket,
so raise or turn off the address limit there). Over the limit: 429
``rate_limited`` with ``Retry-After`` (whole seconds until one request is
allowed again), before the route runs.

Not limited: ``POST /v1/heartbeat`` (devices; its own freshness rule caps a
device at 40 beats a second, and its fast path must stay cheap), the health
probes, and anything outside ``/v1/``. Each server process keeps its own
buckets: with N workers a client gets up to N times the budget.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from modelseal.controlplane.services.people import SESSION_COOKIE

#: buckets kept per process; the least recently used go first (an address
#: flood cannot grow memory without bound)
MAX_BUCKETS: Final = 100_000
_EXEMPT: Final = frozenset({"/v1/heartbeat"})
_SESSION: Final = SESSION_COOKIE.encode() + b"="


class TokenBuckets:
    """``capacity`` requests per minute per key, with bursts up to ``capacity``.

    ``clock`` is passed in (monotonic seconds), so tests step time instead of
    sleeping.
    """

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("a bucket holds at least one request")
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one request for ``key``: 0.0 if allowed, else seconds until one is."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        return wait


def _credential(scope: Scope) -> str | None:
    """A hash of the request's bearer token or session cookie, if it carries one."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return "t:" + hashlib.sha256(value[7:].strip()).hexdigest()[:32]
        if name == b"cookie" and _SESSION in value:
            session = value[value.index(_SESSION) :].split(b";", 1)[0]
            return "s:" + hashlib.sha256(session).hexdigest()[:32]
    return None


class RateLimit:
    """ASGI middleware applying :class:`TokenBuckets` to ``/v1/`` requests (module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_credential: int,
        per_address: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._credential = TokenBuckets(per_credential, clock=clock) if per_credential else None
        self._address = TokenBuckets(per_address, clock=clock) if per_address else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/v1/") or path in _EXEMPT:
            await self.app(scope, receive, send)
            return
        key = _credential(scope)
        buckets = self._credential if key is not None else self._address
        if key is None:
            client = scope.get("client")
            key = "a:" + (str(client[0]) if client else "unknown")
        wait = buckets.take(key) if buckets is not None else 0.0
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        response = JSONResponse(
            {
                "error": {
                    "code": "rate_limited",
                    "message": f"too many requests: retry in {retry} s",
                }
            },
            status_code=429,
            headers={"Retry-After": str(retry)},
        )
        await response(scope, receive, send)


__all__ = ["MAX_BUCKETS", "RateLimit", "TokenBuckets"]
