"""The gateway's upstream client against raw HTTP/1.1 servers on loopback that answer
in every way a model service (or a broken one) can: keep-alive, close-delimited
bodies, interim 1xx answers, HEAD, early answers, dropped and stale connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from modelseal.gateway.upstream import (
    BodyTooLargeError,
    UpstreamError,
    UpstreamPool,
    encode_head,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
        return head, body
    return head, await reader.readexactly(length) if length else b""


async def _serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _head(method: str = "GET", *extra: tuple[str, str]) -> bytes:
    return encode_head(method, "/x", "upstream", list(extra))


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def test_keep_alive_connections_are_reused_and_bodies_read_whole() -> None:
    connections = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                _, body = await _read_request(r)
            except asyncio.IncompleteReadError:
                break
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            await w.drain()
        w.close()

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        for i in range(5):
            data = b"n%d" % i
            answer, conn = await pool.request(
                "127.0.0.1", port, _head("POST", ("Content-Length", str(len(data)))), data
            )
            assert answer.status == 200 and await answer.read(100) == data
            pool.release(conn)
        assert connections == 1
        await pool.close()
        server.close()

    run(main())


def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await w.drain()
        w.write(b"part two")
        w.close()

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        answer, conn = await pool.request("127.0.0.1", port, _head(), None)
        assert await answer.read(1000) == b"part one, part two"
        pool.release(conn)
        assert conn.closed  # never pooled
        server.close()

    run(main())


def test_a_connection_dropped_mid_body_is_an_error_not_a_short_body() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await w.drain()
        w.transport.abort()

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        answer, conn = await pool.request("127.0.0.1", port, _head(), None)
        with pytest.raises(UpstreamError) as info:
            await answer.read(1000)
        assert info.value.started
        pool.release(conn)
        server.close()

    run(main())


def test_interim_answers_are_skipped_and_head_answers_have_no_body() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, _ = await _read_request(r)
            except asyncio.IncompleteReadError:
                break
            if head.startswith(b"HEAD"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
                w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        answer, conn = await pool.request("127.0.0.1", port, _head(), None)
        assert answer.status == 201 and await answer.read(10) == b"ok"
        assert ("Link", "</a>") not in answer.headers
        pool.release(conn)
        answer, conn = await pool.request("127.0.0.1", port, _head("HEAD"), None, head_only=True)
        assert answer.status == 200 and answer.content_length == 1234
        assert await answer.read(10) == b""
        pool.release(conn)
        server.close()

    run(main())


def test_a_connection_the_service_closed_while_idle_is_not_used() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()  # keep-alive promised, closed anyway (as at a keep-alive timeout)

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        for _ in range(3):
            answer, conn = await pool.request("127.0.0.1", port, _head(), None)
            assert await answer.read(10) == b"ok"
            pool.release(conn)
            await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        server.close()

    run(main())


def test_a_reused_connection_failing_before_any_answer_is_retried_once_for_bytes() -> None:
    seen = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal seen
        await _read_request(r)
        seen += 1
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        try:  # the second request on this connection is dropped unanswered
            await _read_request(r)
        except asyncio.IncompleteReadError:
            return
        w.transport.abort()

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        answer, conn = await pool.request("127.0.0.1", port, _head(), None)
        assert await answer.read(10) == b"ok"
        pool.release(conn)
        answer, conn = await pool.request("127.0.0.1", port, _head(), None)
        assert await answer.read(10) == b"ok"  # the retry on a fresh connection
        pool.release(conn)
        assert seen == 2
        server.close()

    run(main())


def test_streamed_request_bodies_chunked_and_with_a_length() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, body = await _read_request(r)
            except asyncio.IncompleteReadError:
                break
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            w.write(body)
            await w.drain()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(40):
            yield bytes([65 + i % 26]) * 65536

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        expected = b"".join([bytes([65 + i % 26]) * 65536 for i in range(40)])
        for header in (("Transfer-Encoding", "chunked"), ("Content-Length", str(len(expected)))):
            answer, conn = await pool.request("127.0.0.1", port, _head("POST", header), chunks())
            assert await answer.read(len(expected)) == expected
            pool.release(conn)
        answer, conn = await pool.request(
            "127.0.0.1", port, _head("POST", ("Transfer-Encoding", "chunked")), chunks()
        )
        with pytest.raises(BodyTooLargeError):
            await answer.read(1000)
        pool.release(conn)  # not read to the end: closed, not pooled
        assert conn.closed
        server.close()

    run(main())


def test_an_answer_before_the_body_is_in_stops_the_upload_and_retires_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        await asyncio.sleep(1)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0.01)

    async def main() -> None:
        server, port = await _serve(handler)
        pool = UpstreamPool()
        answer, conn = await pool.request(
            "127.0.0.1", port, _head("POST", ("Transfer-Encoding", "chunked")), endless()
        )
        assert answer.status == 413 and await answer.read(10) == b""
        pool.release(conn)
        assert conn.closed
        server.close()

    run(main())


def test_unreachable_and_garbage() -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"SMTP ready\r\n\r\n")
        await w.drain()

    async def endless_headers(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):  # a vendor's container must not grow our memory
            w.write(b"X-%d: %s\r\n" % (i, b"v" * 100))
            if i % 1000 == 0:
                try:
                    await w.drain()
                except ConnectionError:
                    return

    async def main() -> None:
        pool = UpstreamPool()
        server, port = await _serve(endless_headers)
        with pytest.raises(UpstreamError, match="headers over 64 KiB"):
            await pool.request("127.0.0.1", port, _head(), None)
        server.close()
        server, port = await _serve(garbage)
        with pytest.raises(UpstreamError, match="malformed answer"):
            await pool.request("127.0.0.1", port, _head(), None)
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.request("127.0.0.1", port, _head(), None)

    run(main())
