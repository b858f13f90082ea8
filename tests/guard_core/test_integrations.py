"""Decorator, ASGI and WSGI middleware, FastAPI dependency: a generic 403 for callers."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.guard import (
    Guard,
    LicenseASGIMiddleware,
    LicenseWSGIMiddleware,
    NotLicensedError,
    fastapi_dependency,
    require_license,
)
from modelseal.guard.audit import iter_records
from tests.guard_core.test_guard import FakeClock, _guard, _license, model, vendor  # noqa: F401
from tests.license.conftest import NOW


@pytest.fixture
def guard(vendor, model, tmp_path) -> Guard:  # type: ignore[no-untyped-def]  # noqa: F811
    _, cek = model
    return _guard(
        vendor, _license(vendor, cek, features=["ocr"], max_calls=1000), tmp_path, FakeClock(NOW)
    )


def test_decorator_sync_and_async(guard: Guard) -> None:
    @require_license(guard)
    def plain(x: int) -> int:
        return x + 1

    @require_license(lambda: guard, feature="hd")
    def premium() -> str:
        return "4k"

    @require_license(guard, feature="ocr")
    async def ocr(text: str) -> str:
        return text.upper()

    assert plain(1) == 2
    assert asyncio.run(ocr("abc")) == "ABC"
    with pytest.raises(NotLicensedError):
        premium()
    assert guard.usage() == 2  # plain and ocr; the refused premium call costs nothing


def _asgi_get(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "method": "GET"}, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_asgi_middleware(guard: Guard) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = LicenseASGIMiddleware(app, guard, features={"/v2/models/hd": "hd", "/v2": "ocr"})
    assert _asgi_get(wrapped, "/v2/models/ocr/infer") == (200, b"ok")
    assert _asgi_get(wrapped, "/v2/models/hd/infer") == (403, b'{"error": "not licensed"}')
    assert _asgi_get(wrapped, "/healthz") == (200, b"ok")
    reasons = [r["reason"] for r in iter_records(guard.audit_path) if r["event"] == "refused"]
    assert reasons == ["feature_missing"]


def test_wsgi_middleware(guard: Guard) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = LicenseWSGIMiddleware(app, guard, features={"/hd": "hd"})
    statuses: list[str] = []

    def call(path: str) -> bytes:
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
        return b"".join(wrapped(environ, lambda status, headers: statuses.append(status)))

    assert call("/infer") == b"ok"
    assert call("/hd/infer") == b'{"error": "not licensed"}'
    assert statuses == ["200 OK", "403 Forbidden"]


def test_fastapi_dependency_and_middleware(guard: Guard) -> None:
    api = FastAPI()

    @api.get("/ocr", dependencies=[Depends(fastapi_dependency(guard, "ocr"))])
    def ocr() -> dict[str, str]:
        return {"text": "hello"}

    @api.get("/hd", dependencies=[Depends(fastapi_dependency(guard, "hd"))])
    def hd() -> dict[str, str]:
        return {"text": "4k"}

    client = TestClient(api)
    assert client.get("/ocr").json() == {"text": "hello"}
    refused = client.get("/hd")
    assert refused.status_code == 403 and refused.json() == {"detail": "not licensed"}

    guarded = FastAPI()
    guarded.add_middleware(LicenseASGIMiddleware, guard=guard, features={"/hd": "hd"})

    @guarded.get("/hd")
    def hd2() -> dict[str, str]:
        return {"text": "4k"}

    r = TestClient(guarded).get("/hd")
    assert r.status_code == 403 and r.json() == {"error": "not licensed"}


def test_expiry_takes_effect_on_the_hot_path(vendor, model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, cek = model
    clock = FakeClock(NOW)
    g = _guard(vendor, _license(vendor, cek), tmp_path, clock, recheck_every=timedelta(0))
    g.check()
    clock.now = NOW + timedelta(days=31)
    with pytest.raises(NotLicensedError) as info:
        g.check()
    assert info.value.reason == "expired"


def test_websockets_are_guarded_and_exempt_paths_match_exactly(guard: Guard) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

    wrapped = LicenseASGIMiddleware(app, guard, features={"/ws/hd": "hd"})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(wrapped({"type": "websocket", "path": "/ws/hd"}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    sent.clear()
    asyncio.run(wrapped({"type": "websocket", "path": "/ws/plain"}, receive, send))
    assert sent == [{"type": "websocket.accept"}]

    async def http_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    strict = LicenseASGIMiddleware(http_app, guard, features={"/": "hd"})
    assert _asgi_get(strict, "/healthz")[0] == 200
    assert _asgi_get(strict, "/healthz/live")[0] == 200
    assert _asgi_get(strict, "/healthzz/x")[0] == 403


@settings(max_examples=300, deadline=None)
@given(
    root=st.sampled_from(["", "/", "/api", "/api/", "/a/b"]),
    tail=st.text(alphabet="/abhdz", max_size=12),
)
def test_no_reading_of_a_gated_path_is_served_without_its_feature(root: str, tail: str) -> None:
    """Whatever a server puts in path/root_path, a path that any reading maps to
    a feature is never exempt, and that feature is required (fail closed)."""
    from modelseal.guard.integrations import _PathPolicy, app_paths

    policy = _PathPolicy(None, {"/hd": "hd", "/a": "a"}, ["/healthz", "/h"])  # type: ignore[arg-type]
    for path in (tail, root.rstrip("/") + "/" + tail.lstrip("/")):
        readings = app_paths(path, root)
        exempt, needed = policy.decide(readings)
        for reading in readings:
            wanted = policy.feature(reading)
            if wanted is not None and not policy.exempt(reading):
                assert not exempt and wanted in needed
