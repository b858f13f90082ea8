"""The application factory. ``modelseal controlplane`` runs it under uvicorn."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Receive, Scope, Send

from modelseal.controlplane import db
from modelseal.controlplane.deps import AppState
from modelseal.controlplane.errors import ControlPlaneError
from modelseal.controlplane.platform import routes as platform_routes
from modelseal.controlplane.platform.runtime import PlatformRuntime
from modelseal.controlplane.routes import admin, device, health
from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
from modelseal.controlplane.services.heartbeats import HeartbeatService
from modelseal.controlplane.settings import Settings
from modelseal.errors import ModelsealError


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyLimit:
    """Refuse bodies over the limit by their Content-Length, before any route reads them.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs a
    task and a stream per request, measurable on the heartbeat path.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, large: tuple[str, str, int] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        #: (path prefix, path suffix, limit): document uploads may be larger
        self.large = large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.limit
            if self.large is not None:
                path = scope.get("path", "")
                if path.startswith(self.large[0]) and path.endswith(self.large[1]):
                    limit = self.large[2]
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                    response = _error(
                        413, "too_large", f"request bodies are limited to {limit} bytes"
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def build_state(settings: Settings) -> AppState:
    engine = db.make_engine(settings)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    sessions = db.session_factory(engine)
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
    app = FastAPI(
        title="modelseal control plane",
        version="1",
        description="Licensing: orders to device-bound licenses, activation, heartbeats.",
    )
    app.state.cp = app_state
    limit = app_state.settings.max_body_bytes

    app.add_middleware(
        BodyLimit,
        limit=limit,
        large=("/v1/platform/models/", "/documents", app_state.settings.max_document_bytes),
    )
    # one deployment backend per process, built on first use, closed on shutdown;
    # tests replace it with their own runtime before the first request
    app.state.platform = PlatformRuntime(app_state.settings)
    app.router.on_shutdown.append(lambda: app.state.platform.close())

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

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(device.router)
    app.include_router(platform_routes.router)
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: settings from ``MODELSEAL_*``."""
    return create_app(Settings())
