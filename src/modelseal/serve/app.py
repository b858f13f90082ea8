"""The model service as an ASGI app: Open Inference Protocol routes, the Guard,
envelopes and metrics, composed as layers.

    Metrics( Envelope( LicenseASGIMiddleware( ModelService ) ) )

The Guard sits inside the envelope layer, so even its refusals leave the
process sealed; metrics sit outside everything and see what the client
sees. Plain ASGI rather than a framework: six routes do not need one, and
the gateway benchmark measures this service directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np

from modelseal import _prometheus
from modelseal.envelope import MEDIA_TYPE, REQUEST_ID_HEADER, EnvelopeSealer, check_request_id
from modelseal.envelope.errors import EnvelopeFormatError
from modelseal.errors import ModelsealError
from modelseal.serve.handlers import Handler
from modelseal.serve.protocol import (
    BINARY_HEADER,
    InferenceRequestError,
    TensorSpec,
    encode_infer_response,
    parse_infer_request,
)

log = logging.getLogger("modelseal.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MODEL_PREFIX: Final = "/v2/models/"
JSON: Final = b"application/json"
_RID_HEADER: Final = REQUEST_ID_HEADER.lower().encode()
SERVER_VERSION: Final = "0.1.0"


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


class BodyTooLargeError(InferenceRequestError):
    """The request body is over ``--max-body`` (HTTP 413)."""


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise InferenceRequestError("client disconnected")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body over {limit} bytes")
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


class ModelService:
    """The OIP v2 routes for one model and its handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str,
        version: str = "1",
        max_body: int = 64 * 1024 * 1024,
        threads: int = 4,
    ) -> None:
        self.handler = handler
        self.name = name
        self.version = version
        self.max_body = max_body
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="predict")
        inputs: Sequence[TensorSpec] = getattr(handler, "inputs", ())
        outputs: Sequence[TensorSpec] = getattr(handler, "outputs", ())
        self._metadata = json.dumps(
            {
                "name": name,
                "versions": [version],
                "platform": getattr(handler, "platform", "modelseal"),
                "inputs": [s.to_json() for s in inputs],
                "outputs": [s.to_json() for s in outputs],
            }
        ).encode()
        self._server = json.dumps(
            {"name": "modelseal", "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}
        ).encode()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _model_route(self, path: str) -> tuple[str, str] | None:
        """``/v2/models/{name}[/versions/{v}][/ready|/infer]`` -> (name, action)."""
        rest = path[len(MODEL_PREFIX) :]
        action = ""
        for suffix in ("/infer", "/ready"):
            if rest.endswith(suffix):
                rest, action = rest[: -len(suffix)], suffix[1:]
                break
        name, sep, version = rest.partition("/versions/")
        if sep and version != self.version:
            return None
        return name, action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path in ("/v2/health/live", "/v2/health/ready"):
            await send_body(send, 200, b"{}")
            return
        if path == "/v2":
            await send_body(send, 200, self._server)
            return
        if not path.startswith(MODEL_PREFIX):
            await send_body(send, 404, error_body(f"no route {path}"))
            return
        route = self._model_route(path)
        if route is None or route[0] != self.name:
            await send_body(send, 404, error_body(f"unknown model or version in {path}"))
            return
        action = route[1]
        if action == "infer":
            if method != "POST":
                await send_body(send, 405, error_body("use POST for infer"))
                return
            await self._infer(scope, receive, send)
            return
        if method not in ("GET", "HEAD"):
            await send_body(send, 405, error_body("use GET"))
            return
        await send_body(send, 200, b"{}" if action == "ready" else self._metadata)

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, self.max_body)
            request = parse_infer_request(body, header(scope, BINARY_HEADER.encode()))
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._pool, self.handler.predict, request.inputs)
            if not isinstance(outputs, dict):
                raise TypeError("the handler's predict() must return a dict of arrays")
            try:
                data, head_len = encode_infer_response(
                    model_name=self.name,
                    model_version=self.version,
                    request=request,
                    outputs={k: np.asarray(v) for k, v in outputs.items()},
                )
            except ValueError:
                raise InferenceRequestError(
                    "an output holds NaN or infinity, which JSON cannot carry; "
                    "ask for binary outputs"
                ) from None
        except BodyTooLargeError as exc:
            await send_body(send, 413, error_body(str(exc)))
            return
        except InferenceRequestError as exc:
            await send_body(send, 400, error_body(str(exc)))
            return
        except ModelsealError as exc:
            await send_body(send, 400, error_body(str(exc)))
            return
        except Exception:
            log.exception("predict failed for model %s", self.name)
            await send_body(send, 500, error_body("prediction failed; see the service log"))
            return
        if head_len is None:
            await send_body(send, 200, data)
        else:
            await send_body(
                send,
                200,
                data,
                b"application/octet-stream",
                [(BINARY_HEADER.encode(), str(head_len).encode())],
            )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class CanonicalModelPath:
    """Rewrite ``/v2/models/{name}/versions/{v}/...`` to ``/v2/models/{name}/...``.

    The Guard's middleware gates features by path prefix; without one
    spelling per route, ``--feature /v2/models/m/infer=hd`` would let
    ``/v2/models/m/versions/1/infer`` through ungated. Only this service's
    own version is rewritten: any other stays as sent, and the service
    answers 404 for it.
    """

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if path.startswith(MODEL_PREFIX) and "/versions/" in path:
            name, _, tail = path[len(MODEL_PREFIX) :].partition("/versions/")
            version, sep, action = tail.partition("/")
            if version == self.version:
                canonical = MODEL_PREFIX + name + (sep + action if sep else "")
                scope = dict(scope, path=canonical, raw_path=canonical.encode())
        await self.app(scope, receive, send)


class EnvelopeMiddleware:
    """Seal every response under ``prefix`` (the model routes), errors included.

    The whole body is buffered: an AEAD tag covers all of it, and a body
    that never finished must not go out half-sealed.
    """

    def __init__(
        self,
        app: ASGIApp,
        sealer: EnvelopeSealer,
        *,
        prefix: str = MODEL_PREFIX,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.app = app
        self.sealer = sealer
        self.prefix = prefix
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        rid = header(scope, _RID_HEADER) or ""
        try:
            check_request_id(rid)
        except EnvelopeFormatError as exc:
            await self._seal_and_send(send, "", 400, JSON, error_body(str(exc)), [])
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        done = False

        async def capture(msg: dict[str, Any]) -> None:
            nonlocal done
            if msg["type"] == "http.response.start":
                start.update(msg)
                return
            if msg["type"] == "http.response.body" and not done:
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body", False):
                    done = True

        try:
            await self.app(scope, receive, capture)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            start, chunks, done = {}, [], False
        if not start or not done:
            await self._seal_and_send(send, rid, 500, JSON, error_body("internal error"), [])
            return
        content_type = JSON
        keep: list[tuple[bytes, bytes]] = []
        for k, v in start.get("headers", ()):
            lk = k.lower()
            if lk == b"content-type":
                content_type = v
            elif lk not in (b"content-length", b"transfer-encoding", b"content-encoding"):
                keep.append((k, v))
        await self._seal_and_send(
            send, rid, int(start["status"]), content_type, b"".join(chunks), keep
        )

    async def _seal_and_send(
        self,
        send: Send,
        rid: str,
        status: int,
        content_type: bytes,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        rotations = self.sealer.rotations
        sealed = self.sealer.seal(
            body, request_id=rid, status=status, content_type=content_type.decode("latin-1")
        )
        if self.metrics is not None:
            self.metrics.envelopes.inc()
            if self.sealer.rotations != rotations:
                self.metrics.session_keys.inc()
        headers.append((b"x-modelseal-envelope", b"1"))
        await send_body(send, status, sealed, MEDIA_TYPE.encode(), headers)


class ServeMetrics:
    """The service's Prometheus series (one registry per app)."""

    def __init__(self, model: str) -> None:
        from prometheus_client import Counter, Histogram

        self.model = model
        self.registry = _prometheus.new_registry()
        self.requests = Counter(
            "modelseal_serve_requests",
            "Requests by route kind and status",
            ["model", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelseal_serve_request_seconds",
            "Request latency by route kind",
            ["model", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.refusals = Counter(
            "modelseal_serve_license_refusals",
            "Model-route requests the Guard refused",
            ["model"],
            registry=self.registry,
        ).labels(model)
        self.envelopes = Counter(
            "modelseal_serve_envelopes",
            "Response bodies sealed as envelopes",
            ["model"],
            registry=self.registry,
        ).labels(model)
        self.session_keys = Counter(
            "modelseal_serve_envelope_session_keys",
            "Session keys wrapped with the gateway's SM2 key (one SM2 encryption each)",
            ["model"],
            registry=self.registry,
        ).labels(model)


class MetricsMiddleware:
    """``/metrics`` for Prometheus; counts and times everything else."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _kind(path: str) -> str:
        if path.startswith(MODEL_PREFIX):
            return "infer" if path.endswith("/infer") else "model"
        if path.startswith("/v2/health"):
            return "health"
        return "server" if path == "/v2" else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        if scope["path"] == "/metrics":
            data, ctype = _prometheus.render(m.registry)
            await send_body(send, 200, data, ctype.encode())
            return
        t0 = time.perf_counter()
        status = 500

        async def watch(msg: dict[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        finally:
            kind = self._kind(scope["path"])
            m.latency.labels(m.model, kind).observe(time.perf_counter() - t0)
            m.requests.labels(m.model, kind, str(status)).inc()
            if status == 403 and kind in ("infer", "model"):
                m.refusals.inc()
