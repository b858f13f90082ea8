"""Guarding functions and web apps: decorator, ASGI and WSGI middleware, FastAPI dependency.

HTTP callers get a bare 403 ``{"error": "not licensed"}`` whatever the
reason; the guard's audit log has the reason code. The one exception an app
may choose: when the guard cannot write its state (a full disk), which says
nothing about the license, ``unavailable_status=503`` tells clients to
retry. Nothing here imports a web framework at module load.

Paths are matched relative to where the app is mounted (ASGI ``root_path``,
WSGI ``SCRIPT_NAME``): under ``Mount("/api", app)`` the app's routes are
``/hd``, not ``/api/hd``, and a policy written for the app must hold there.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, Final, TypeVar, cast

from modelseal.errors import ModelsealError
from modelseal.guard.core import Guard, GuardStorageError

F = TypeVar("F", bound=Callable[..., Any])

FORBIDDEN_BODY = json.dumps({"error": "not licensed"}).encode()
UNAVAILABLE_BODY = json.dumps({"error": "license check unavailable, retry"}).encode()
#: Seconds a client is asked to wait before retrying a 503.
RETRY_AFTER: Final = "5"


def _status_for(exc: BaseException, unavailable_status: int) -> int:
    """403 for every refusal; ``unavailable_status`` when only storage failed."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, OSError) or reason == GuardStorageError.reason:
        return unavailable_status
    return 403


def app_paths(path: str, root: str) -> list[str]:
    """The request's path relative to the app's root first, then other readings.

    The first reading is the one Starlette routes on (``get_route_path``:
    ``root_path`` stripped when ``path`` starts with it and a ``/``). Servers
    have disagreed on whether ``path`` includes ``root_path`` (the ASGI spec
    and uvicorn since 0.26 say it does; older servers strip it), so when the
    root was stripped the raw path is a second reading, and the policy fails
    closed over both (:meth:`_PathPolicy.decide`).
    """
    path = path or "/"
    root = root.rstrip("/")
    if root and path.startswith(root + "/"):
        return [path[len(root) :], path]
    if root and path == root:
        return ["/", path]
    return [path]


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

    def decide(self, paths: list[str]) -> tuple[bool, list[str]]:
        """``(exempt, features needed)`` for a request that may be any of ``paths``.

        An exempt reading needs nothing; every other reading's feature is
        needed (fail closed). The request is exempt when the routed path (the
        first) is exempt and no other reading needs a feature: a mounted app's
        health check stays exempt, and no reading of a gated route is ever
        served without its feature.
        """
        needed: list[str] = []
        for p in paths:
            f = None if self.exempt(p) else self.feature(p)
            if f is not None and f not in needed:
                needed.append(f)
        return self.exempt(paths[0]) and not needed, needed


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
        unavailable_status: int = 403,
        counted: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.routes = _PathPolicy(guard, features, exempt)
        self.unavailable_status = unavailable_status
        #: which request paths use a licensed call (default: every checked one);
        #: the others are checked without counting (e.g. model metadata)
        self.counted = counted

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        paths = app_paths(str(scope.get("path", "")), str(scope.get("root_path", "")))
        exempt, needed = self.routes.decide(paths)
        if exempt:
            await self.app(scope, receive, send)
            return
        try:
            await self.routes.guard.acheck(
                needed[0] if len(needed) == 1 else needed or None,
                count=self.counted is None or any(self.counted(p) for p in paths),
            )
        except (ModelsealError, OSError) as exc:
            # any failure of the guard is a refusal; callers learn nothing more
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            status = _status_for(exc, self.unavailable_status)
            body = FORBIDDEN_BODY if status == 403 else UNAVAILABLE_BODY
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            if status == 503:
                headers.append((b"retry-after", RETRY_AFTER.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
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
        unavailable_status: int = 403,
    ) -> None:
        self.app = app
        self.routes = _PathPolicy(guard, features, exempt)
        self.unavailable_status = unavailable_status

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # WSGI keeps the mount point in SCRIPT_NAME and the app's path in
        # PATH_INFO; this is unambiguous, so PATH_INFO is the app's path
        exempt, needed = self.routes.decide([str(environ.get("PATH_INFO", "")) or "/"])
        if not exempt:
            try:
                self.routes.guard.check(needed[0] if len(needed) == 1 else needed or None)
            except (ModelsealError, OSError) as exc:
                status = _status_for(exc, self.unavailable_status)
                body = FORBIDDEN_BODY if status == 403 else UNAVAILABLE_BODY
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                if status == 503:
                    headers.append(("Retry-After", RETRY_AFTER))
                start_response(f"{status} {HTTPStatus(status).phrase}", headers)
                return [body]
        return self.app(environ, start_response)


def fastapi_dependency(
    guard: Guard, feature: str | None = None, *, unavailable_status: int = 403
) -> Callable[[], Awaitable[None]]:
    """``Depends(fastapi_dependency(guard, "hd"))`` on a route: 403 unless licensed."""

    async def dependency() -> None:
        try:
            await guard.acheck(feature)
        except (ModelsealError, OSError) as exc:
            from fastapi import HTTPException

            status = _status_for(exc, unavailable_status)
            if status == 403:
                raise HTTPException(status_code=403, detail="not licensed") from None
            raise HTTPException(
                status_code=status,
                detail="license check unavailable, retry",
                headers={"Retry-After": RETRY_AFTER},
            ) from None

    return dependency
