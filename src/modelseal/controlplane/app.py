"""The application factory. ``modelseal controlplane`` runs it under uvicorn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from modelseal.controlplane import db
from modelseal.controlplane.deps import AppState
from modelseal.controlplane.errors import ControlPlaneError
from modelseal.controlplane.routes import admin, device, health
from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
from modelseal.controlplane.services.heartbeats import HeartbeatService
from modelseal.controlplane.settings import Settings
from modelseal.errors import ModelsealError


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


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

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return _error(413, "too_large", f"request bodies are limited to {limit} bytes")
        return await call_next(request)

    @app.exception_handler(ControlPlaneError)
    async def on_cp_error(_request: Request, exc: ControlPlaneError) -> JSONResponse:
        return _error(exc.status_code, exc.code, str(exc))

    @app.exception_handler(ModelsealError)
    async def on_error(_request: Request, exc: ModelsealError) -> JSONResponse:
        return _error(422, "invalid_request", str(exc) or type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(device.router)
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: settings from ``MODELSEAL_*``."""
    return create_app(Settings())
