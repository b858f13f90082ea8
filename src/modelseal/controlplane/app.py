"""The application factory. ``modelseal controlplane`` runs it under uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Receive, Scope, Send

from modelseal.controlplane import db, hsm
from modelseal.controlplane.deps import AppState
from modelseal.controlplane.errors import ControlPlaneError
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

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                    response = _error(
                        413, "too_large", f"request bodies are limited to {self.limit} bytes"
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def build_state(settings: Settings) -> AppState:
    engine = db.make_engine(settings)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    box.hsm = hsm.from_settings(settings)
    sessions = db.session_factory(engine)
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

    app = FastAPI(
        lifespan=lifespan,
        title="modelseal control plane",
        version="1",
        description="Licensing: orders to device-bound licenses, activation, heartbeats.",
    )
    app.state.cp = app_state
    limit = app_state.settings.max_body_bytes

    app.add_middleware(BodyLimit, limit=limit)

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
    app.include_router(people.router)
    app.include_router(webhook_routes.router)
    app.include_router(replacement.router)
    app.include_router(reports.router)
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: settings from ``MODELSEAL_*``."""
    return create_app(Settings())
