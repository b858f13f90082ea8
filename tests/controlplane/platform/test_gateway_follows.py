"""``modelseal gateway --controlplane`` follows route and key changes without a restart,
and keeps serving its last good routes while the control plane is down (real processes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.controlplane.conftest import Server, start_server
from tests.serve._deployment import Server as Proc
from tests.serve._deployment import free_port

P = "/v1/platform"


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"upstream": self.server.server_port, "path": self.path}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstreams() -> Iterator[list[str]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Echo) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_port}" for s in servers]
    for s in servers:
        s.shutdown()


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not within the time limit")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_gateway_follows_and_survives_the_control_plane(
    server: Server, upstreams: list[str], tmp_path: Path
) -> None:
    cp = server.client()
    route = {"id": "echo", "prefix": "/echo", "forward_url": upstreams[0], "decrypt": False}
    assert cp.post(f"{P}/routes", json=route).status_code == 201
    key = cp.post(f"{P}/api-keys", json={"name": "alice", "routes": ["*"]}).json()["key"]
    gw_token = cp.post("/v1/tokens", json={"name": "gateway", "role": "auditor"}).json()["token"]
    token_file = tmp_path / "gw.token"
    token_file.write_text(gw_token)
    port = free_port()
    gateway = Proc(
        [
            "gateway",
            "--controlplane",
            server.url,
            "--token-file",
            str(token_file),
            "--poll-interval",
            "0.2",
            "--port",
            str(port),
        ],
        port,
        cwd=tmp_path,
        ready_path="/healthz",
    )
    url = f"http://127.0.0.1:{port}"

    def get(path: str, k: str | None = key) -> httpx.Response:
        headers = {"Authorization": f"Bearer {k}"} if k else {}
        return httpx.get(url + path, headers=headers, timeout=10)

    try:
        first = get("/echo/a")
        assert first.status_code == 200, first.text
        assert first.json()["path"] == "/a"
        assert get("/echo/a", None).status_code == 401
        # a new route and a new key appear without a restart
        cp.post(
            f"{P}/routes",
            json={**route, "id": "two", "prefix": "/two", "forward_url": upstreams[1]},
        )
        bob = cp.post(f"{P}/api-keys", json={"name": "bob", "routes": ["two"]}).json()["key"]
        _until(lambda: get("/two/x", bob).status_code == 200)
        assert get("/two/x", bob).json()["upstream"] == int(upstreams[1].rsplit(":", 1)[1])
        assert get("/echo/a", bob).status_code == 403  # bob's key covers /two only
        # a revoked key stops working; a deleted route disappears
        cp.post(f"{P}/api-keys/bob/revoke")
        _until(lambda: get("/two/x", bob).status_code == 401)
        cp.delete(f"{P}/routes/two")
        _until(lambda: get("/two/x").status_code == 404)
        # the control plane goes away: the last good routes keep serving
        server.kill()
        time.sleep(1.0)  # several failed polls
        assert gateway.proc.poll() is None
        assert get("/echo/b").status_code == 200
        assert get("/echo/b").json()["path"] == "/b"
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'modelseal_gateway_routes_reloads_total{result="refused"}' in metrics
        # ... and when it is back, changes flow again
        server.proc = start_server(server.data_dir, server.database_url, port=server.port)
        cp = server.client()
        cp.post(f"{P}/routes", json={**route, "id": "three", "prefix": "/three"})
        try:
            _until(lambda: get("/three/c").status_code == 200, timeout=60)
        except AssertionError:
            raise AssertionError(gateway.output()[-3000:]) from None
    finally:
        gateway.stop()
    assert "control plane unreachable" in gateway.output()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_gateway_that_cannot_reach_the_control_plane_at_start_says_so(
    server: Server, tmp_path: Path
) -> None:
    from tests.serve._deployment import run_cli

    token_file = tmp_path / "t"
    token_file.write_text("mst_wrong")
    proc = run_cli(
        "gateway",
        "--controlplane",
        server.url,
        "--token-file",
        token_file,
        "--port",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 21 and "refused" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("gateway", "--controlplane", server.url, cwd=tmp_path)
    assert proc.returncode == 2 and "--token-file" in proc.stderr
    proc = run_cli("gateway", cwd=tmp_path)
    assert proc.returncode == 2 and "--controlplane" in proc.stderr


def test_the_gateway_needs_nothing_of_the_server() -> None:
    """Following a control plane is HTTP: the gateway imports no server package."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "for n in ('fastapi', 'sqlalchemy', 'alembic', 'uvicorn', 'starlette'):\n"
        "    sys.modules[n] = None\n"
        "import modelseal.gateway.proxy, modelseal.gateway.server\n"
        "import modelseal.gateway.controlplane_source, modelseal.cli.platform\n"
        "assert not [m for m in sys.modules if m.startswith('modelseal.controlplane')]\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
