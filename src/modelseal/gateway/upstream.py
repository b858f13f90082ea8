"""A small HTTP/1.1 client for the gateway's upstream calls: pooled keep-alive
connections, httptools' C parser, one write per request.

Why not aiohttp's client: measured here (bench/RESULTS.md, gateway section)
an aiohttp ``ClientSession`` request costs ~200 us of CPU on a loaded
machine against ~50 us for a protocol like this one, and the upstream call
was most of the gateway's cost per proxied request. The gateway needs
little of a general client: one origin per route (plain ``http://``), no
redirects, cookies, proxies, compression or authentication, and the
request it forwards has already been parsed and checked by aiohttp's
server. What it does need, it gets here: keep-alive pooling with stale
connections retired, flow control both ways, a deadline over the whole
exchange, and errors that say whether the model service was unreachable,
broke off, or was too slow.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterable
from typing import Final

import httptools

#: A pooled connection idle longer than this is closed rather than reused:
#: below uvicorn's default keep-alive (5 s), so the gateway, not the model
#: service, closes idle connections and a request rarely meets one closing.
IDLE_S: Final = 4.0
#: Idle connections kept per upstream.
MAX_IDLE: Final = 64
#: An answer's header block larger than this is refused (llhttp sets no limit,
#: and a model service runs a vendor's container: it must not grow our memory).
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 256
#: Response body buffered before the upstream socket is paused.
HIGH_WATER: Final = 1024 * 1024


class UpstreamError(Exception):
    """The model service could not be reached or broke the exchange off."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        #: True when part of the response had arrived (no retry is safe).
        self.started = started


class UpstreamResponse:
    """Status and headers of the model service's answer; the body streams or is read whole."""

    def __init__(self, conn: _Conn, status: int, headers: list[tuple[str, str]]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self.content_length: int | None = None
        self.content_type = ""
        self.chunked = False
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
            elif lname == "transfer-encoding":
                self.chunked = "chunked" in value.lower()
            elif lname == "content-type":
                self.content_type = value.split(";", 1)[0].strip().lower()

    async def read(self, limit: int) -> bytes:
        """The whole body; :class:`BodyTooLargeError` past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            parts.append(chunk)
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                return
            yield chunk


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")


class _HeadersTooLargeError(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._lost: BaseException | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._active = False
        self._eof_body = False
        self._received = False
        self._head_only = False
        self._keep_alive = True
        self._can_write: asyncio.Future[None] | None = None
        self._paused_reading = False

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        if not self._active:
            # bytes nobody asked for: the connection is out of step, retire it
            self._fail(UpstreamError("unexpected data from the model service"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("the model service switched protocols", started=True))
        except httptools.HttpParserError as exc:
            if self._head_only and self._head is None:
                return  # the body of an answer to HEAD is ignored
            why = (
                "headers over 64 KiB or 256 fields"
                if self._header_bytes > MAX_HEADER_BYTES
                else str(exc)
            )
            self._fail(
                UpstreamError(f"malformed answer from the model service: {why}", started=True)
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and exc is None and self._head is None and self._eof_body:
            self._finish()  # a body delimited by the end of the connection
        elif self._active or self._head is not None:
            self._fail(
                UpstreamError(
                    "the model service closed the connection"
                    + (f" ({exc})" if exc is not None else ""),
                    started=self._received,
                )
            )
        self._wake_writer()

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # --- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES or len(self._headers) >= MAX_HEADERS:
            # httptools turns this into an HttpParserCallbackError from feed_data
            self._header_bytes = MAX_HEADER_BYTES + 1
            raise _HeadersTooLargeError
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._header_bytes = 0
        if 100 <= status < 200:  # an interim answer (e.g. 103): wait for the real one
            self._headers = []
            return
        self._keep_alive = self.parser.should_keep_alive()
        resp = UpstreamResponse(self, status, self._headers)
        self._headers = []
        self._eof_body = (
            resp.content_length is None
            and not resp.chunked
            and status not in (204, 304)
            and not self._head_only
        )
        if self._eof_body:
            self._keep_alive = False
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(resp)
        if self._head_only:
            # an answer to HEAD has no body, whatever its Content-Length says;
            # the parser cannot be told, so the connection is not reused
            self._keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused_reading and self.transport:
            self.transport.pause_reading()
            self._paused_reading = True
        self._wake_reader()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self._finish()

    # --- the exchange ------------------------------------------------------------------

    def _finish(self) -> None:
        self._active = False
        self._complete = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: UpstreamError) -> None:
        self._active = False
        self._lost = exc
        self._keep_alive = False
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(exc)
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.transport is not None and not self.closed:
            self.transport.abort()
            self.closed = True

    async def next_chunk(self) -> bytes | None:
        while True:
            if self._body:
                chunk = self._body.popleft()
                self._buffered -= len(chunk)
                if self._paused_reading and self._buffered <= HIGH_WATER // 2 and self.transport:
                    self.transport.resume_reading()
                    self._paused_reading = False
                return chunk
            if self._complete:
                return None
            if self._lost is not None:
                raise self._lost
            self._body_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None

    async def drain(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._can_write is not None:
            await self._can_write
        if self._lost is not None:
            raise self._lost

    def start(self, head_only: bool) -> asyncio.Future[UpstreamResponse]:
        self._complete = False
        self._active = True
        self._eof_body = False
        self._received = False
        self._lost = None
        self._head_only = head_only
        self._keep_alive = True
        self._body.clear()
        self._buffered = 0
        self._head = asyncio.get_running_loop().create_future()
        return self._head

    def no_reuse(self) -> None:
        self._keep_alive = False

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed and not self._body

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class UpstreamPool:
    """Keep-alive connections per (host, port); a connection serves one exchange at a time."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._all: set[_Conn] = set()

    async def _connect(self, key: tuple[str, int]) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self, key), key[0], key[1])
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {key[0]}:{key[1]}: {exc.strerror or exc}"
            ) from None
        self._all.add(conn)
        return conn

    def _take_idle(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            self._drop(conn)
        return None

    def release(self, conn: _Conn) -> None:
        """Done with ``conn``'s exchange: pooled when its answer was read to the end
        and both sides keep the connection alive, otherwise closed."""
        if not conn.reusable:
            self._drop(conn)
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= MAX_IDLE:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        self._all.discard(conn)

    async def request(
        self,
        host: str,
        port: int,
        head: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        *,
        head_only: bool = False,
    ) -> tuple[UpstreamResponse, _Conn]:
        """Send ``head`` (the request line and headers, ending in a blank line) and
        ``body``; return when the answer's status and headers are in.

        A request that fails on a reused connection before any byte of an answer
        arrived is sent once more on a fresh connection when its body was bytes
        (the service closed an idle connection as the request went out: it
        cannot have acted on it). A streamed body is never replayed.
        """
        key = (host, port)
        for attempt in (0, 1):
            conn = self._take_idle(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key)
            try:
                return await self._exchange(conn, head, body, head_only), conn
            except UpstreamError as exc:
                self._drop(conn)
                if reused and not exc.started and (body is None or isinstance(body, bytes)):
                    continue
                raise
            except BaseException:  # cancelled or timed out mid-exchange
                self._drop(conn)
                raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(
        conn: _Conn,
        head: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        head_only: bool,
    ) -> UpstreamResponse:
        answer = conn.start(head_only)
        transport = conn.transport
        assert transport is not None
        if conn.closed:
            raise UpstreamError("the model service closed the connection")
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            chunked = b"transfer-encoding: chunked" in head.lower()
            try:
                async for chunk in body:
                    if not chunk:
                        continue
                    if answer.done():
                        # answered before the body was in (e.g. 413): stop sending;
                        # the service may still expect the rest, so never reuse it
                        conn.no_reuse()
                        break
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await conn.drain()
            except BaseException:
                # the answer will not be awaited: mark its error as seen, or
                # asyncio logs "exception was never retrieved" for it
                if answer.done() and not answer.cancelled():
                    answer.exception()
                raise
            if chunked and not answer.done():
                transport.write(b"0\r\n\r\n")
        return await answer

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()


def encode_head(
    method: str, target: str, host_header: str, headers: Iterable[tuple[str, str]]
) -> bytes:
    """The request line and headers. Values come from aiohttp's parsed request
    (no CR or LF can be in them) or from the gateway itself."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


__all__ = [
    "BodyTooLargeError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "encode_head",
]
