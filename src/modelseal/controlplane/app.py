"""The application factory. ``modelseal controlplane`` runs it under uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelseal.controlplane import db, hsm
from modelseal.controlplane.deps import AppState
from modelseal.controlplane.errors import ControlPlaneError
from modelseal.controlplane.platform import routes as platform_routes
from modelseal.controlplane.platform.runtime import PlatformRuntime
from modelseal.controlplane.routes import (
    admin,
    device,
    health,
    people,
    replacement,
    reports,
)
from modelseal.controlplane.routes import webhooks as webhook_routes
from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
from modelseal.controlplane.services import audit, webhooks
from modelseal.controlplane.services import people as people_service
from modelseal.controlplane.services.heartbeats import HeartbeatService, heartbeat_reply
from modelseal.controlplane.settings import Settings
from modelseal.errors import ModelsealError
from modelseal.license.heartbeat import MAX_BODY_BYTES

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyTooLargeError(StarletteHTTPException):
    """Raised from the counting ``receive`` once a streamed body passes the limit.

    An ``HTTPException`` on purpose: FastAPI turns any other exception
    raised while it reads a JSON body into a 400, and the app's handler
    renders this one as our 413 error body.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


class BodyLimit:
    """Refuse bodies over the limit: by Content-Length up front, and while streaming.

    A chunked body (no Content-Length) is counted as it arrives; the chunk
    that crosses the limit raises ``BodyTooLargeError`` (413) before the
    route sees the body, so a 40 MiB chunked upload is never buffered
    (review finding). A plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request,
    measurable on the heartbeat path.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, large: Sequence[tuple[str, str, int]] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        #: (path prefix, path suffix, limit) rules: document uploads may be larger
        self.large = tuple(large)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.limit
            path = scope.get("path", "")
            for prefix, suffix, larger in self.large:
                if path.startswith(prefix) and path.endswith(suffix):
                    limit = larger
                    break
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                    response = _error(
                        413, "too_large", f"request bodies are limited to {limit} bytes"
                    )
                    await response(scope, receive, send)
                    return
            # the same limit while streaming: resetting it here to the small one
            # refused every document between 1 MiB and the document limit mid-body
            seen = 0

            async def counting_receive() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise BodyTooLargeError(limit)
                return message

            await self.app(scope, counting_receive, send)
            return
        await self.app(scope, receive, send)


class HeartbeatFastPath:
    """``POST /v1/heartbeat`` straight to the service, past FastAPI's router and DI.

    Profiled under load (bench/RESULTS.md): route matching, dependency
    solving and the exception/exit-stack layers were about a third of the
    server's CPU per heartbeat, several times the handler itself. The route
    in ``routes/device.py`` stays registered (the OpenAPI document describes
    it, and it serves when this path is off); both call ``heartbeat_reply``,
    so the answers are the same bytes.
    """

    def __init__(self, app: ASGIApp, *, service: HeartbeatService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/heartbeat" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                await _error(413, "too_large", f"heartbeat larger than {MAX_BODY_BYTES} bytes")(
                    scope, receive, send
                )
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _error(413, "too_large", f"heartbeat larger than {MAX_BODY_BYTES} bytes")(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        try:
            body = await run_in_threadpool(
                heartbeat_reply, self.service, b"".join(chunks), authorization
            )
        except ControlPlaneError as exc:
            await _error(exc.status_code, exc.code, str(exc))(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build_state(settings: Settings) -> AppState:
    engine = db.make_engine(settings)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    box.hsm = hsm.from_settings(settings)
    sessions = db.session_factory(engine)
    people_service.install_address_limiter(sessions)
    audit.install(sessions, box)
    webhooks.install()
    return AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        box=box,
        heartbeats=HeartbeatService(
            engine,
            box,
            sessions,
            group_commit=settings.heartbeat_group_commit,
        ),
    )


def create_app(settings: Settings | None = None, *, state: AppState | None = None) -> FastAPI:
    app_state = state or build_state(settings or Settings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = webhooks.start_worker(app_state)
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            # a lifespan replaces Starlette's on_shutdown hooks: the platform's
            # backend (local deployments' supervisors) is closed here
            _app.state.platform.close()

    app = FastAPI(
        lifespan=lifespan,
        title="modelseal control plane",
        version="1",
        description="Licensing: orders to device-bound licenses, activation, heartbeats.",
    )
    app.state.cp = app_state
    limit = app_state.settings.max_body_bytes

    documents = app_state.settings.max_document_bytes
    app.add_middleware(
        BodyLimit,
        limit=limit,
        large=(
            ("/v1/platform/models/", "/documents", documents),
            # the console's multipart form: the document plus its form fields and boundaries
            ("/console/platform/documents/upload", "", documents + (64 << 10)),
        ),
    )
    if app_state.settings.argon2_concurrency:
        from modelseal.controlplane.services.people import limit_argon2

        limit_argon2(app_state.settings.argon2_concurrency)
    if app_state.settings.heartbeat_fast_path:
        app.add_middleware(HeartbeatFastPath, service=app_state.heartbeats)
    if app_state.settings.rate_limit_credential or app_state.settings.rate_limit_address:
        from modelseal.controlplane.ratelimit import RateLimit

        app.add_middleware(
            RateLimit,
            per_credential=app_state.settings.rate_limit_credential,
            per_address=app_state.settings.rate_limit_address,
        )
    # one deployment backend per process, built on first use, closed on shutdown
    # (in the lifespan above); tests replace it with their own runtime before
    # the first request
    app.state.platform = PlatformRuntime(app_state.settings)

    @app.exception_handler(ControlPlaneError)
    async def on_cp_error(_request: Request, exc: ControlPlaneError) -> JSONResponse:
        return _error(exc.status_code, exc.code, str(exc))

    @app.exception_handler(ModelsealError)
    async def on_error(_request: Request, exc: ModelsealError) -> JSONResponse:
        return _error(422, "invalid_request", str(exc) or type(exc).__name__)

    @app.exception_handler(DataError)
    async def on_data_error(_request: Request, _exc: DataError) -> JSONResponse:
        # e.g. a NUL character, which PostgreSQL text cannot hold (found by schemathesis):
        # the request is bad, not the server
        return _error(422, "invalid_request", "a value holds characters that cannot be stored")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404 (no route), 405 and our streamed 413 answer in
        # the API's one error shape, not ``{"detail": ...}`` (review finding)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        response = _error(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(device.router)
    app.include_router(people.router)
    app.include_router(webhook_routes.router)
    app.include_router(replacement.router)
    app.include_router(reports.router)
    app.include_router(platform_routes.router)
    # the web console (/console, not in the OpenAPI document; docs/console.md)
    from modelseal.controlplane import console

    console.mount(app)
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: settings from ``MODELSEAL_*``."""
    return create_app(Settings())
