"""The gateway: API keys, longest-prefix routes, a pooled streaming proxy, envelope
decryption, rate limits, access log, hot reload.

aiohttp serves (~45 us of CPU per request here); model services are called
through ``gateway/upstream.py``, a small pooled HTTP/1.1 client, because
aiohttp's client session cost ~200 us per request against ~50 us for it
(httpx's pool ~1.3 ms: docs/design.md, bench/RESULTS.md).

Order of checks, so that a request without a valid key learns nothing and
costs a model service nothing: key (401), route (404), permission (403),
rate limit (429), then upstream. The user's key never goes upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict

from modelseal import _prometheus
from modelseal.envelope import MEDIA_TYPE, REQUEST_ID_HEADER, EnvelopeOpener
from modelseal.envelope.errors import (
    EnvelopeFormatError,
    EnvelopeIntegrityError,
    WrongGatewayKeyError,
)
from modelseal.errors import ModelsealError
from modelseal.gateway.controlplane_source import ControlPlaneSource
from modelseal.gateway.metrics import GatewayMetrics
from modelseal.gateway.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from modelseal.gateway.routes import (
    ApiKey,
    GatewayConfig,
    GatewayConfigError,
    Route,
    load_config,
)
from modelseal.gateway.upstream import (
    BodyTooLargeError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    encode_head,
)

log = logging.getLogger("modelseal.gateway")
access = logging.getLogger("modelseal.gateway.access")

#: Largest envelope buffered for decryption; larger answers are a 502.
MAX_ENVELOPE: Final = 256 * 1024 * 1024
#: Bodies up to this size are read whole; larger ones stream.
SMALL_BODY: Final = 1024 * 1024

_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Headers a client could send to pose as someone else to the model service (its
#: address, host, scheme, path). The gateway is the edge, so it drops what the
#: client said and sets X-Forwarded-For/-Proto/-Host/-Prefix and X-Real-IP from
#: what it saw itself.
_SPOOFABLE: Final = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-original-forwarded-for",
    }
)
_NOT_UPSTREAM: Final = _HOP | _SPOOFABLE | {"authorization", "x-api-key", REQUEST_ID_HEADER.lower()}
_NOT_DOWNSTREAM_SEALED: Final = _HOP | {
    "content-type",
    "content-encoding",
    "x-modelseal-envelope",
    "date",
    "server",
}
_NOT_DOWNSTREAM: Final = _HOP | {"date", "server"}
_JSON: Final = "application/json"


def _error(status: int, message: str, rid: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": message}).encode(),
        content_type=_JSON,
        headers={REQUEST_ID_HEADER: rid, **headers},
    )


def _bad_body(rid: str, exc: Exception) -> web.Response:
    """The client's request body broke off or was malformed: its mistake, a 400."""
    log.info("bad request body (rid %s): %s", rid, exc)
    return _error(400, "the request body is malformed or incomplete", rid)


def presented_key(request: web.BaseRequest) -> str | None:
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("X-Api-Key") or None


# Encoded forms of separators and dots (lower-cased): a route is matched on the
# decoded path, so "/a/%2e%2e/b" or "/a/..%2Fb" would match route /a and then
# reach /b once the upstream URL is resolved. Refused rather than normalised:
# no client of an inference API needs them.
_ENCODED_SEPARATORS: Final = ("%2f", "%5c", "%2e", "%3f", "%23", "%00")


def _unsafe_path(raw_path: str, path: str) -> bool:
    """True for a path a prefix check cannot judge: dot segments or encoded separators."""
    raw = raw_path.split("?", 1)[0].lower()
    if any(enc in raw for enc in _ENCODED_SEPARATORS):
        return True
    return "\\" in path or any(seg in (".", "..") for seg in path.split("/"))


def _downstream(headers: list[tuple[str, str]], drop: frozenset[str]) -> CIMultiDict[str]:
    """The upstream answer's headers the client may see (hop-by-hop ones and
    those the answer's Connection header names are dropped)."""
    named: set[str] = set()
    for k, v in headers:
        if k.lower() == "connection":
            named.update(h.strip().lower() for h in v.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers:
        lk = k.lower()
        if lk not in drop and lk not in named:
            out.add(k, v)
    return out


#: Path characters sent upstream as they are (RFC 3986 pchar and "/").
_PLAIN_PATH: Final = re.compile(r"[A-Za-z0-9/._~!$&'()*+,;=:@-]*")


def _quote_path(path: str) -> str:
    """Percent-encode the decoded path for the request line. Routes match the
    decoded path, so the upstream must receive exactly that path: encoding it
    again here (rather than forwarding the client's raw bytes) means a prefix
    spelled with escapes still maps to the same upstream path."""
    if _PLAIN_PATH.fullmatch(path):
        return path
    return quote(path, safe="/!$&'()*+,;=:@")


@dataclass(frozen=True)
class _Upstream:
    """A route's forward URL, split once."""

    host: str
    port: int
    host_header: str
    base_path: str

    @classmethod
    def of(cls, url: str) -> _Upstream:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 80
        return cls(host, port, parts.netloc, parts.path.rstrip("/"))


class Gateway:
    """One gateway process: configuration, upstream pool, key cache, limiter, metrics."""

    def __init__(
        self,
        routes_path: str | os.PathLike[str] | None,
        opener: EnvelopeOpener | None,
        *,
        limiter: RateLimiter | None = None,
        watch_interval: float = 1.0,
        source: ControlPlaneSource | None = None,
    ) -> None:
        # routes come from a file (watched) or from a control plane (followed)
        self.source = source
        self.routes_path = Path(routes_path) if routes_path is not None else None
        if source is not None:
            self.config: GatewayConfig = source.config or source.load()
        else:
            assert self.routes_path is not None, "a routes file or a control plane"
            self.config = load_config(self.routes_path)
        self._stamp = self._file_stamp()
        self.opener = opener
        self.limiter: RateLimiter = limiter or MemoryRateLimiter()
        self.metrics = GatewayMetrics()
        self.watch_interval = watch_interval
        self.pool = UpstreamPool()
        #: aiohttp's client, only for polling the control plane (not per request)
        self.session: aiohttp.ClientSession | None = None
        self._upstreams: dict[str, _Upstream] = {}
        # prometheus' labels() costs microseconds a call; children are cached
        # (bounded: route ids x status codes x reasons)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._access = _AccessLog()
        self._watcher: asyncio.Task[None] | None = None
        if opener is None and any(r.decrypt for r in self.config.routes):
            raise GatewayConfigError("routes with decrypt: true need --envelope-private-key")

    # --- lifecycle and reloads --------------------------------------------------------

    async def start(self) -> None:
        if self.source is not None:
            self.session = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        self._watcher = asyncio.create_task(
            self.source.follow(self) if self.source is not None else self._watch()
        )

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.pool.close()
        if self.session is not None:
            await self.session.close()
        await self.limiter.close()
        self._access.flush()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.routes_path is None:
            return None
        try:
            st = self.routes_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, why: str) -> bool:
        """Swap in the file's configuration; an invalid file keeps the old one.

        Requests in flight hold the configuration they started with, so
        nothing is dropped or half-routed by a swap.
        """
        if self.source is not None:
            self.source.wake()  # SIGHUP: ask the control plane now; the swap follows
            return False
        assert self.routes_path is not None
        self._stamp = self._file_stamp()
        try:
            config = load_config(self.routes_path)
        except ModelsealError as exc:
            log.error("routes reload (%s) refused, keeping the previous routes: %s", why, exc)
            self.metrics.reloads.labels("refused").inc()
            return False
        except Exception:
            # a bug in parsing must not end the file watcher (later valid edits
            # would never load): keep serving the previous routes, say so loudly
            log.exception("routes reload (%s) failed, keeping the previous routes", why)
            self.metrics.reloads.labels("refused").inc()
            return False
        return self.swap(config, why)

    def swap(self, config: GatewayConfig, why: str) -> bool:
        """Serve ``config`` from now on, unless it cannot be served (kept the old one)."""
        if self.opener is None and any(r.decrypt for r in config.routes):
            log.error(
                "routes reload (%s) refused, keeping the previous routes: "
                "routes with decrypt: true need --envelope-private-key",
                why,
            )
            self.metrics.reloads.labels("refused").inc()
            return False
        self.config = config
        self.metrics.reloads.labels("ok").inc()
        log.warning(
            "routes reloaded (%s): %d routes, %d keys",
            why,
            len(config.routes),
            len(config.keys_by_hash),
        )
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self.reload("file changed")

    # --- requests ---------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        t0 = time.perf_counter()
        rid = secrets.token_urlsafe(16)
        path = request.path
        if path == "/metrics":
            data, ctype = _prometheus.render(self.metrics.registry)
            return web.Response(body=data, headers={"Content-Type": ctype})
        if path == "/healthz":
            return web.Response(body=b"{}", content_type=_JSON)
        config = self.config
        route: Route | None = None
        key: ApiKey | None = None
        upstream_status: int | None = None
        resp: web.StreamResponse
        try:
            resp, route, key, upstream_status = await self._handle(request, config, rid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway error on %s", path)
            resp = _error(500, "internal gateway error", rid)
        route_label = route.id if route is not None else "-"
        self._child(self.metrics.requests, route_label, str(resp.status)).inc()
        elapsed = time.perf_counter() - t0
        self._child(self.metrics.latency, route_label).observe(elapsed)
        if access.isEnabledFor(logging.INFO):
            # by hand, not json.dumps of a dict: ~5x cheaper, and only the path
            # and peer can hold characters that need escaping (the method is an
            # HTTP token, ids and key names are validated, rid is base64url)
            peer = request.remote
            self._access.write(
                f'{{"ts":"{self._access.timestamp()}",'
                f'"rid":"{rid}","method":"{request.method}","path":{json.dumps(path)},'
                f'"route":"{route_label}",'
                f'"key":{"null" if key is None else chr(34) + key.name + chr(34)},'
                f'"status":{resp.status},'
                f'"upstream_status":{"null" if upstream_status is None else upstream_status},'
                f'"ms":{elapsed * 1000:.3f},'
                f'"peer":{"null" if peer is None else json.dumps(peer)}}}'
            )
        return resp

    async def _handle(
        self, request: web.BaseRequest, config: GatewayConfig, rid: str
    ) -> tuple[web.StreamResponse, Route | None, ApiKey | None, int | None]:
        m = self.metrics
        presented = presented_key(request)
        if presented is None:
            m.refused.labels("no_key").inc()
            return (
                _error(401, "an API key is required", rid, **{"WWW-Authenticate": "Bearer"}),
                None,
                None,
                None,
            )
        key = config.key_for(presented)
        if key is None:
            m.refused.labels("bad_key").inc()
            return (
                _error(401, "invalid API key", rid, **{"WWW-Authenticate": "Bearer"}),
                None,
                None,
                None,
            )
        if _unsafe_path(request.raw_path, request.path):
            m.refused.labels("bad_path").inc()
            return (
                _error(400, "path with dot segments or encoded separators", rid),
                None,
                key,
                None,
            )
        route = config.match(request.path)
        if route is None:
            m.refused.labels("no_route").inc()
            return _error(404, f"no route for {request.path}", rid), None, key, None
        if not key.allows(route.id):
            m.refused.labels("forbidden").inc()
            return _error(403, f"this key may not use route {route.id!r}", rid), route, key, None
        if key.rate_limit is not None:
            wait = await self.limiter.acquire(key.name, key.rate_limit)
            if isinstance(self.limiter, RedisRateLimiter):
                errors = self.limiter.errors
                if errors:
                    m.ratelimit_errors.inc(errors)
                    self.limiter.errors = 0
            if wait > 0:
                m.refused.labels("rate_limited").inc()
                retry = str(max(1, int(wait + 0.999)))
                return (
                    _error(
                        429, f"rate limit {key.rate_limit} exceeded", rid, **{"Retry-After": retry}
                    ),
                    route,
                    key,
                    None,
                )
        resp, upstream_status = await self._proxy(request, route, rid)
        return resp, route, key, upstream_status

    async def _proxy(
        self, request: web.BaseRequest, route: Route, rid: str
    ) -> tuple[web.StreamResponse, int | None]:
        up = self._upstreams.get(route.forward_url)
        if up is None:
            up = self._upstreams[route.forward_url] = _Upstream.of(route.forward_url)
        raw = request.raw_path
        qpos = raw.find("?")
        path = request.path
        if route.strip_prefix and route.prefix != "/":
            path = path[len(route.prefix) :]
            if not path.startswith("/"):
                path = "/" + path
        target = up.base_path + _quote_path(path)
        if qpos >= 0:
            target += raw[qpos:]
        peer = request.remote or ""
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_UPSTREAM]
        named = request.headers.get("Connection")
        if named:
            drop = {h.strip().lower() for h in named.split(",")}
            headers = [(k, v) for k, v in headers if k.lower() not in drop]
        headers += (
            (REQUEST_ID_HEADER, rid),
            ("X-Forwarded-For", peer),
            ("X-Real-IP", peer),
            ("X-Forwarded-Proto", request.scheme),
            ("X-Forwarded-Host", request.host or ""),
            ("X-Forwarded-Prefix", route.prefix),
        )
        method = request.method
        if method == "HEAD" and route.decrypt:
            # An answer to HEAD has no body, so no envelope to open and check:
            # ask with GET and send the client the headers without the body
            # (aiohttp leaves out the body of an answer to HEAD).
            method = "GET"
        body: bytes | AsyncIterator[bytes] | None = None
        if request.can_read_body:
            cl = request.content_length
            if cl is not None and cl <= SMALL_BODY:
                try:
                    body = await request.read()
                except RequestPayloadError as exc:
                    return _bad_body(rid, exc), None
                headers.append(("Content-Length", str(len(body))))
            elif cl is not None:
                body = request.content.iter_any()
                headers.append(("Content-Length", str(cl)))
            else:
                body = request.content.iter_any()
                headers.append(("Transfer-Encoding", "chunked"))
        elif method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", "0"))
        head = encode_head(method, target, up.host_header, headers)
        m = self.metrics
        conn = None
        try:
            async with asyncio.timeout(route.timeout_s) as deadline:
                answer, conn = await self.pool.request(
                    up.host, up.port, head, body, head_only=method == "HEAD"
                )
                if route.decrypt:
                    return await self._decrypted(answer, route, rid), answer.status
                return await self._passed(request, answer, route, rid, deadline), answer.status
        except TimeoutError:
            m.upstream_errors.labels(route.id, "timeout").inc()
            return _error(
                504,
                f"route {route.id!r}: the model service did not answer in {route.timeout_s:g}s",
                rid,
            ), None
        except RequestPayloadError as exc:  # the client's streamed body was malformed
            return _bad_body(rid, exc), None
        except UpstreamError as exc:
            m.upstream_errors.labels(route.id, "unreachable").inc()
            log.warning("route %s: upstream %s failed: %s", route.id, up.host_header, exc)
            return _error(502, f"route {route.id!r}: the model service is unreachable", rid), None
        finally:
            if conn is not None:
                self.pool.release(conn)

    async def _decrypted(self, up: UpstreamResponse, route: Route, rid: str) -> web.StreamResponse:
        assert self.opener is not None
        m = self.metrics
        if up.content_type != MEDIA_TYPE:
            m.envelope_failures.labels(route.id, "not_an_envelope").inc()
            return _error(
                502,
                f"route {route.id!r}: the model service answered without an "
                "envelope; refusing to pass it on",
                rid,
            )
        try:
            if (up.content_length or 0) > MAX_ENVELOPE:
                raise BodyTooLargeError(MAX_ENVELOPE)
            buf = await up.read(MAX_ENVELOPE)
        except BodyTooLargeError:
            m.envelope_failures.labels(route.id, "too_large").inc()
            return _error(502, f"route {route.id!r}: envelope over {MAX_ENVELOPE} bytes", rid)
        unwraps = self.opener.unwraps
        try:
            opened = self.opener.open(buf, request_id=rid)
        except (EnvelopeFormatError, WrongGatewayKeyError, EnvelopeIntegrityError) as exc:
            reason = {
                EnvelopeFormatError: "malformed",
                WrongGatewayKeyError: "wrong_key_id",
                EnvelopeIntegrityError: "authentication",
            }[type(exc)]
            m.envelope_failures.labels(route.id, reason).inc()
            log.warning("route %s: envelope refused (%s): %s", route.id, reason, exc)
            return _error(
                502, f"route {route.id!r}: the model service's response was refused: {exc}", rid
            )
        finally:
            if self.opener.unwraps != unwraps:
                m.unwraps.inc(self.opener.unwraps - unwraps)
        self._child(m.envelopes, route.id).inc()
        headers = _downstream(up.headers, _NOT_DOWNSTREAM_SEALED)
        headers[REQUEST_ID_HEADER] = rid
        if opened.content_type:
            headers["Content-Type"] = opened.content_type
        return web.Response(status=opened.status, body=opened.body, headers=headers)

    async def _passed(
        self,
        request: web.BaseRequest,
        up: UpstreamResponse,
        route: Route,
        rid: str,
        deadline: asyncio.Timeout,
    ) -> web.StreamResponse:
        headers = _downstream(up.headers, _NOT_DOWNSTREAM)
        headers[REQUEST_ID_HEADER] = rid
        if up.content_length is not None and up.content_length <= SMALL_BODY:
            return web.Response(status=up.status, body=await up.read(SMALL_BODY), headers=headers)
        out = web.StreamResponse(status=up.status, headers=headers)
        if up.content_length is not None:
            # the client can tell a short body from a complete one
            out.content_length = up.content_length
        await out.prepare(request)
        try:
            async for chunk in up.iter_chunks():
                await out.write(chunk)
        except ConnectionError:  # the client went away; the upstream connection is dropped
            return out
        except (UpstreamError, asyncio.CancelledError) as exc:
            # The status line and part of the body are out: a 502 is no longer
            # possible, and ending the body cleanly would hand the client a
            # truncated answer that looks complete. Abort the connection so the
            # client sees the failure (no chunked terminator, or a short body);
            # aiohttp's own end of the answer (write_eof) then meets a closed
            # transport and drops the connection quietly.
            if isinstance(exc, asyncio.CancelledError) and not deadline.expired():
                raise  # a real cancellation (shutdown), not route.timeout_s running out
            self.metrics.upstream_errors.labels(route.id, "broken").inc()
            log.warning("route %s: upstream broke off mid-answer (rid %s): %s", route.id, rid, exc)
            if request.transport is not None:
                request.transport.abort()
            return out
        await out.write_eof()
        return out


# --- running -----------------------------------------------------------------------------


class _AccessLog:
    """Access-log lines, written to stderr in batches: at most 50 ms after the
    request or when 64 KB are waiting, and at shutdown. One write per request
    cost a system call each; a crash (kill -9) loses at most the last 50 ms."""

    def __init__(self, delay: float = 0.05, limit: int = 64 * 1024) -> None:
        self._lines: list[str] = []
        self._size = 0
        self._delay = delay
        self._limit = limit
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._prefix = ""

    def timestamp(self) -> str:
        """ISO 8601 UTC with milliseconds; the date and time of day are formatted
        once per second (datetime per request cost more than the rest of the line)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = "\n".join(self._lines) + "\n"
        self._lines.clear()
        self._size = 0
        try:
            sys.stderr.write(data)
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed or full: never fail a request
            pass


class _ClientMistakes(logging.Filter):
    """aiohttp logs a traceback for every malformed request it answers with 400:
    anyone could fill the gateway's log with them. One line each, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            record.msg = f"{record.msg}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return http_log.isEnabledFor(logging.INFO)
        return True


http_log = logging.getLogger("modelseal.gateway.http")
http_log.addFilter(_ClientMistakes())


def configure_logging(access_log: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("gateway: %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)


async def serve_socket(
    gateway: Gateway,
    sock: Any,
    *,
    shutdown_timeout: float = 30.0,
    idle_timeout: float = 30.0,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT; SIGHUP reloads the routes file.

    On SIGTERM the listener closes first and requests in flight get up to
    ``shutdown_timeout`` seconds to finish.
    """
    await gateway.start()
    # auto_decompress=False: a compressed request body goes upstream as sent
    # (with its Content-Encoding), not inflated here; keepalive_timeout also
    # closes a connection that never finishes its request headers (slowloris).
    server = web.Server(
        gateway.handle,
        access_log=None,
        logger=http_log,
        auto_decompress=False,
        keepalive_timeout=idle_timeout,
    )
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload, "SIGHUP")
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await gateway.close()


def run_loop(main: Any) -> None:
    """Run ``main`` on uvloop when installed (less CPU per proxied request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def build_gateway(
    routes: str | None,
    private_key: str | bytes | None,
    redis_url: str | None,
    *,
    passphrase: str | None = None,
    source: ControlPlaneSource | None = None,
) -> Gateway:
    """``private_key`` is a file path, or PEM bytes (from the control plane, never on disk)."""
    from modelseal.crypto import load_private_key

    opener = None
    if private_key is not None:
        opener = EnvelopeOpener(load_private_key(private_key, passphrase))
    limiter: RateLimiter | None = RedisRateLimiter(redis_url) if redis_url else None
    return Gateway(routes, opener, limiter=limiter, source=source)
