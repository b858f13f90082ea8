"""Guarding functions and web apps: decorator, ASGI and WSGI middleware, FastAPI dependency.

HTTP callers get a bare 403 ``{"error": "not licensed"}`` whatever the
reason; the guard's audit log has the reason code. Nothing here imports a
web framework at module load.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from modelseal.errors import ModelsealError
from modelseal.guard.core import Guard

F = TypeVar("F", bound=Callable[..., Any])

FORBIDDEN_BODY = json.dumps({"error": "not licensed"}).encode()


def require_license(
    guard: Guard | Callable[[], Guard], feature: str | None = None
) -> Callable[[F], F]:
    """Decorate a sync or async function so each call is checked (and counted).

    ``guard`` may be a factory, so a module can decorate before the guard exists.
    """

    def resolve() -> Guard:
        return guard if isinstance(guard, Guard) else guard()

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await resolve().acheck(feature)
                return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            resolve().check(feature)
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class _PathPolicy:
    """Which feature a request path needs (longest prefix wins) and which paths are exempt."""

    def __init__(
        self, guard: Guard, features: dict[str, str] | None, exempt: Iterable[str]
    ) -> None:
        self.guard = guard
        self._features = sorted((features or {}).items(), key=lambda kv: -len(kv[0]))
        self._exempt = tuple(exempt)

    def exempt(self, path: str) -> bool:
        # "/healthz" exempts "/healthz" and "/healthz/...", not "/healthzz"
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self._exempt)

    def feature(self, path: str) -> str | None:
        return next((f for prefix, f in self._features if path.startswith(prefix)), None)


class LicenseASGIMiddleware:
    """ASGI middleware (Starlette, FastAPI, any ASGI app): checks every HTTP request.

    ``features`` maps a path prefix to the feature it needs, longest prefix wins;
    ``exempt`` prefixes (health checks) pass unchecked.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        *,
        features: dict[str, str] | None = None,
        exempt: Iterable[str] = ("/healthz",),
    ) -> None:
        self.app = app
        self.routes = _PathPolicy(guard, features, exempt)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = str(scope.get("path", ""))
        kind = scope.get("type")
        if kind not in ("http", "websocket") or self.routes.exempt(path):
            await self.app(scope, receive, send)
            return
        try:
            await self.routes.guard.acheck(self.routes.feature(path))
        except ModelsealError:
            # any failure of the guard is a refusal; callers learn nothing more
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(FORBIDDEN_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": FORBIDDEN_BODY})
            return
        await self.app(scope, receive, send)


class LicenseWSGIMiddleware:
    """WSGI middleware (Flask, Django, any WSGI app): checks every request."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        guard: Guard,
        *,
        features: dict[str, str] | None = None,
        exempt: Iterable[str] = ("/healthz",),
    ) -> None:
        self.app = app
        self.routes = _PathPolicy(guard, features, exempt)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if not self.routes.exempt(path):
            try:
                self.routes.guard.check(self.routes.feature(path))
            except ModelsealError:
                start_response(
                    "403 Forbidden",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(FORBIDDEN_BODY))),
                    ],
                )
                return [FORBIDDEN_BODY]
        return self.app(environ, start_response)


def fastapi_dependency(guard: Guard, feature: str | None = None) -> Callable[[], Awaitable[None]]:
    """``Depends(fastapi_dependency(guard, "hd"))`` on a route: 403 unless licensed."""

    async def dependency() -> None:
        try:
            await guard.acheck(feature)
        except ModelsealError:
            from fastapi import HTTPException

            raise HTTPException(status_code=403, detail="not licensed") from None

    return dependency
