"""The web console under ``/console`` (docs/console.md).

Server-rendered pages (Jinja2) over the same service layer as the API, with
htmx and Chart.js as progressive enhancement; the front-end files come from
npm at set-up time (``scripts/console-assets.sh``) and are never committed.
Nothing here is in the OpenAPI document: the console is for people, the API
for programs.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from modelseal.controlplane.console import auth, licensing, platform
from modelseal.controlplane.console.web import (
    PREFIX,
    STATIC,
    ConsoleRedirect,
    ConsoleRefusal,
    SecurityHeaders,
    missing_assets,
    page,
    problem,
    redirect,
)


def mount(app: FastAPI) -> None:
    """Add the console's routes, static files, headers and error pages to the app."""
    missing_assets()  # logs the set-up command once at start-up when htmx/Chart.js are absent
    app.include_router(auth.router)
    app.include_router(licensing.router)
    app.include_router(platform.router)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC, check_dir=False), name="console")
    app.add_middleware(SecurityHeaders)

    @app.get(PREFIX, include_in_schema=False)
    def console_root() -> Response:
        return redirect(PREFIX + "/")

    @app.api_route(PREFIX + "/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    def console_not_found(rest: str, request: Request) -> HTMLResponse:
        return problem(
            request, None, "There is no console page here.", status=404, title="Not found"
        )

    @app.exception_handler(ConsoleRedirect)
    async def on_redirect(_request: Request, exc: ConsoleRedirect) -> Response:
        return redirect(exc.where)

    @app.exception_handler(ConsoleRefusal)
    async def on_refusal(request: Request, exc: ConsoleRefusal) -> HTMLResponse:
        return page(
            request, "error.html", None, status=exc.status, title=exc.title, message=exc.message
        )


__all__ = ["mount"]
