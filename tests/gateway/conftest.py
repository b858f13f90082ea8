"""A real deployment on loopback: ``modelseal serve`` with envelopes, a relay that
misbehaves on purpose (tampers, replays, seals for another key, stalls), and
``modelseal gateway`` in front of both."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelseal.crypto import generate_private_key
from modelseal.envelope import MEDIA_TYPE, EnvelopeSealer
from modelseal.gateway import new_api_key
from tests.serve._deployment import Deployment, Server, free_port, make_deployment, serve_args


class Relay(http.server.ThreadingHTTPServer):
    """Forwards ``/MODE/rest`` to the model service as ``/rest`` and applies MODE."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.upstream = upstream
        self.seen = 0
        self.other_sealer = EnvelopeSealer(generate_private_key("sm2").public_key())
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Relay

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _forward(self, path: str, rid: str) -> tuple[int, bytes, str]:
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else None
        req = urllib.request.Request(
            self.server.upstream + path,
            data=data,
            method=self.command,
            headers={"X-Modelseal-Request-Id": rid, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read(), r.headers["Content-Type"]
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers["Content-Type"]

    def _handle(self) -> None:
        self.server.seen += 1
        _, mode, rest = self.path.split("/", 2)
        rest = "/" + rest
        rid = self.headers.get("X-Modelseal-Request-Id", "")
        if mode == "slow":
            time.sleep(2.0)
            self._reply(200, b"{}", "application/json")
        elif mode == "slowok":
            time.sleep(1.0)
            self._reply(200, b'{"slow":true}', "application/json")
        elif mode == "echo":
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            doc = {"path": self.path, "headers": dict(self.headers.items()), "body": body.decode()}
            self._reply(200, json.dumps(doc).encode(), "application/json")
        elif mode == "plain":
            self._reply(200, b'{"outputs":"in the clear"}', "application/json")
        elif mode == "big":
            chunk = b"x" * 65536
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(48):  # 3 MiB, streamed
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "die":  # chunked, then the connection drops mid-body
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 65536
            for _ in range(24):  # 1.5 MiB, more than the gateway reads whole
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self._drop()
        elif mode == "drip":  # chunked, slower than the route's timeout
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(20):
                    self.wfile.write(b"4\r\ndrip\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif mode == "short":  # promises 3 MiB, sends 1.5 MiB, drops the connection
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(3 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"z" * (1536 * 1024))
            self._drop()
        elif mode == "tamper":
            status, body, ctype = self._forward(rest, rid)
            self._reply(status, body[:-1] + bytes([body[-1] ^ 1]), ctype)
        elif mode == "replay":
            status, body, ctype = self._forward(rest, "an-earlier-request")
            self._reply(status, body, ctype)
        elif mode == "wrongkey":
            _, body, _ = self._forward(rest, rid)
            self._reply(200, self.server.other_sealer.seal(b"{}", request_id=rid), MEDIA_TYPE)
        else:
            self._reply(404, b"{}", "application/json")

    do_GET = _handle  # noqa: N815 - http.server's names
    do_POST = _handle  # noqa: N815


@dataclass
class Stack:
    dep: Deployment
    serve: Server
    relay: Relay
    gateway: Server
    routes: Path
    keys: dict[str, str]

    def metric(self, server: Server, name: str, **labels: str) -> float:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total


def routes_doc(serve_url: str, relay_url: str, digests: dict[str, str]) -> dict[str, Any]:
    def route(rid: str, prefix: str, url: str, **kw: Any) -> dict[str, Any]:
        return {"id": rid, "name": rid, "prefix": prefix, "forward_url": url, **kw}

    return {
        "version": 1,
        "routes": [
            route("demo", "/demo", serve_url),
            route("tamper", "/tamper", relay_url + "/tamper"),
            route("replay", "/replay", relay_url + "/replay"),
            route("wrongkey", "/wrongkey", relay_url + "/wrongkey"),
            route("leak", "/leak", relay_url + "/plain"),
            route("slow", "/slow", relay_url + "/slow", timeout_s=0.5),
            route("slowok", "/slowok", relay_url + "/slowok", decrypt=False),
            route("big", "/big", relay_url + "/big", decrypt=False),
            route("echo", "/echo", relay_url + "/echo", decrypt=False, strip_prefix=True),
            route("die", "/die", relay_url + "/die", decrypt=False),
            route("short", "/short", relay_url + "/short", decrypt=False),
            route("drip", "/drip", relay_url + "/drip", decrypt=False, timeout_s=0.5),
            route("down", "/down", f"http://127.0.0.1:{free_port()}"),
        ],
        "api_keys": [
            {"name": "alice", "sha256": digests["alice"], "routes": ["*"]},
            {"name": "bob", "sha256": digests["bob"], "routes": ["big"]},
        ],
    }


def gateway_args(routes: Path, dep: Deployment, port: int, *extra: str) -> list[str]:
    return [
        "gateway",
        "--routes",
        str(routes),
        "--envelope-private-key",
        str(dep.gateway_pem),
        "--port",
        str(port),
        *extra,
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    dep = make_deployment(root)
    sp = free_port()
    serve = Server(serve_args(dep, sp), sp, cwd=root, ready_path="/metrics")
    relay = Relay(serve.url)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    keys, digests = {}, {}
    for name in ("alice", "bob"):
        keys[name], digests[name] = new_api_key()
    routes = root / "routes.yaml"
    routes.write_text(yaml.safe_dump(routes_doc(serve.url, relay.url, digests)))
    gp = free_port()
    gateway = Server(gateway_args(routes, dep, gp), gp, cwd=root, ready_path="/healthz")
    try:
        yield Stack(dep, serve, relay, gateway, routes, keys)
    finally:
        gateway.stop()
        serve.stop()
        relay.shutdown()


def request(
    url: str,
    *,
    key: str | None = None,
    body: Any = None,
    header: str = "Authorization",
    timeout: float = 20,
) -> tuple[int, bytes, Any]:
    """Status, body and the headers (case-insensitive, as http.client parses them)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "Authorization" else key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers
