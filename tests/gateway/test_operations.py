"""Operating the gateway: hot reload (file change and SIGHUP) without dropping requests
in flight, limits shared by two gateway processes through Redis, several workers,
start-up errors as one line."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelseal.gateway import new_api_key
from tests.gateway.conftest import Stack, gateway_args, request, routes_doc
from tests.serve._deployment import MODEL_ID, Server, free_port, run_cli

META = f"/demo/v2/models/{MODEL_ID}"


def wait_for(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def fresh_routes(stack: Stack, tmp_path: Path, **keys: str) -> tuple[Path, dict[str, Any]]:
    digests = {"alice": keys.get("alice", "aa" * 32), "bob": "bb" * 32}
    doc = routes_doc(stack.serve.url, stack.relay.url, digests)
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, doc


def test_hot_reload_on_change_and_sighup_keeps_requests_in_flight(
    stack: Stack, tmp_path: Path
) -> None:
    alice, alice_digest = new_api_key()
    dave, dave_digest = new_api_key()
    routes, doc = fresh_routes(stack, tmp_path, alice=alice_digest)
    port = free_port()
    gw = Server(gateway_args(routes, stack.dep, port), port, cwd=tmp_path, ready_path="/healthz")
    try:
        assert request(gw.url + META, key=dave)[0] == 401
        # a slow request is in flight while the file changes
        slow: dict[str, Any] = {}
        t = threading.Thread(target=lambda: slow.update(r=request(gw.url + "/slowok/x", key=alice)))
        t.start()
        time.sleep(0.3)
        doc["api_keys"].append({"name": "dave", "sha256": dave_digest, "routes": ["demo"]})
        routes.write_text(yaml.safe_dump(doc))
        assert wait_for(lambda: request(gw.url + META, key=dave)[0] == 200)
        t.join(20)
        assert slow["r"][0] == 200 and slow["r"][1] == b'{"slow":true}'
        # an invalid file is refused and the running routes stay
        routes.write_text("version: 1\nroutes: nope\n")
        assert wait_for(lambda: "reload (file changed) refused" in gw.output())
        assert "routes: must be a list" in gw.output()
        assert request(gw.url + META, key=dave)[0] == 200
        # SIGHUP: rewrite without dave, keep the mtime so only the signal can notice
        st = routes.stat()
        doc["api_keys"] = doc["api_keys"][:1]
        routes.write_text(yaml.safe_dump(doc))
        os.utime(routes, ns=(st.st_atime_ns, st.st_mtime_ns))
        gw.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(gw.url + META, key=dave)[0] == 401)
        assert "routes reloaded (SIGHUP)" in gw.output()
        assert request(gw.url + META, key=alice)[0] == 200
    finally:
        assert gw.stop() == 0


def test_rate_limits_hold_across_two_gateways_sharing_redis(stack: Stack, tmp_path: Path) -> None:
    redis_url = os.environ.get("MODELSEAL_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("MODELSEAL_TEST_REDIS_URL not set (CI sets it; Redis on 127.0.0.1:6379)")
    key, digest = new_api_key()
    routes, doc = fresh_routes(stack, tmp_path)
    name = f"carol-{uuid.uuid4().hex[:12]}"  # Redis outlives the test: a fresh budget
    doc["api_keys"].append(
        {"name": name, "sha256": digest, "routes": ["demo"], "rate_limit": "6/min"}
    )
    routes.write_text(yaml.safe_dump(doc))
    gateways = []
    try:
        for _ in range(2):
            port = free_port()
            gateways.append(
                Server(
                    gateway_args(routes, stack.dep, port, "--redis-url", redis_url),
                    port,
                    cwd=tmp_path,
                    ready_path="/healthz",
                )
            )
        statuses = [request(gateways[i % 2].url + META, key=key)[0] for i in range(10)]
        assert statuses == [200] * 6 + [429] * 4
        status, body, headers = request(gateways[0].url + META, key=key)
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert b"rate limit 6/min exceeded" in body
    finally:
        for g in gateways:
            g.stop()


def test_in_memory_limits_without_redis(stack: Stack, tmp_path: Path) -> None:
    key, digest = new_api_key()
    routes, doc = fresh_routes(stack, tmp_path)
    doc["api_keys"].append(
        {"name": "erin", "sha256": digest, "routes": ["demo"], "rate_limit": "3/h"}
    )
    routes.write_text(yaml.safe_dump(doc))
    port = free_port()
    gw = Server(gateway_args(routes, stack.dep, port), port, cwd=tmp_path, ready_path="/healthz")
    try:
        assert [request(gw.url + META, key=key)[0] for _ in range(5)] == [200] * 3 + [429] * 2
    finally:
        gw.stop()


def test_two_workers_serve_reload_and_stop(stack: Stack, tmp_path: Path) -> None:
    alice, digest = new_api_key()
    routes, _ = fresh_routes(stack, tmp_path, alice=digest)
    port = free_port()
    gw = Server(
        gateway_args(routes, stack.dep, port, "--workers", "2"),
        port,
        cwd=tmp_path,
        ready_path="/healthz",
    )
    try:
        assert wait_for(lambda: gw.output().count("gateway worker") == 2)
        assert all(request(gw.url + META, key=alice)[0] == 200 for _ in range(10))
        gw.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: gw.output().count("routes reloaded (SIGHUP)") == 2)
        assert request(gw.url + "/metrics")[1].count(b"modelseal_gateway_requests_total{") >= 1
    finally:
        assert gw.stop() == 0
    with pytest.raises(OSError, match=r"Connection refused"):
        request(gw.url + "/healthz", timeout=2)  # every worker is gone


@pytest.mark.parametrize(
    ("mutation", "code", "message"),
    [
        ("bad_routes", 3, "routes[0].prefix"),
        ("no_key", 2, "need --envelope-private-key"),
        ("wrong_key_type", 2, "must be an SM2 key"),
        ("port_in_use", 26, "already in use"),
    ],
)
def test_start_up_errors_are_one_line(
    stack: Stack, tmp_path: Path, mutation: str, code: int, message: str
) -> None:
    import socket

    from modelseal.crypto import generate_private_key

    routes, doc = fresh_routes(stack, tmp_path)
    port = free_port()
    args = gateway_args(routes, stack.dep, port)
    busy = None
    if mutation == "bad_routes":
        doc["routes"][0]["prefix"] = "demo"
        routes.write_text(yaml.safe_dump(doc))
    elif mutation == "no_key":
        args = args[:3] + args[5:]
    elif mutation == "wrong_key_type":
        generate_private_key("ed25519").save(tmp_path / "ed.pem")
        args[args.index(str(stack.dep.gateway_pem))] = str(tmp_path / "ed.pem")
    else:
        busy = socket.socket()
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
    try:
        r = run_cli(*args, cwd=tmp_path)
    finally:
        if busy is not None:
            busy.close()
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_a_worker_killed_with_sigkill_is_replaced(stack: Stack, tmp_path: Path) -> None:
    alice, digest = new_api_key()
    routes, _ = fresh_routes(stack, tmp_path, alice=digest)
    port = free_port()
    gw = Server(
        gateway_args(routes, stack.dep, port, "--workers", "2"),
        port,
        cwd=tmp_path,
        ready_path="/healthz",
    )
    try:
        assert wait_for(lambda: gw.output().count("gateway worker") == 2)
        victim = int(gw.output().split("gateway worker ", 1)[1].split()[0])
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: f"worker {victim} exited with -9; restarting it" in gw.output())
        assert wait_for(lambda: gw.output().count("gateway worker") == 3)
        assert all(request(gw.url + META, key=alice)[0] == 200 for _ in range(10))
    finally:
        assert gw.stop() == 0


def test_a_model_service_killed_with_sigkill_is_a_502_then_recovers(
    stack: Stack, tmp_path: Path
) -> None:
    from tests.serve._deployment import serve_args

    sp = free_port()
    serve = Server(serve_args(stack.dep, sp), sp, cwd=tmp_path, ready_path="/metrics")
    alice, digest = new_api_key()
    doc = {
        "version": 1,
        "routes": [{"id": "demo", "prefix": "/demo", "forward_url": serve.url}],
        "api_keys": [{"name": "alice", "sha256": digest, "routes": ["demo"]}],
    }
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(doc))
    port = free_port()
    gw = Server(gateway_args(routes, stack.dep, port), port, cwd=tmp_path, ready_path="/healthz")
    try:
        assert request(gw.url + META, key=alice)[0] == 200  # a pooled connection now exists
        serve.stop(signal.SIGKILL)
        t0 = time.monotonic()
        status, body, _ = request(gw.url + META, key=alice)
        assert status == 502 and b"unreachable" in body
        assert time.monotonic() - t0 < 10
        serve = Server(serve_args(stack.dep, sp), sp, cwd=tmp_path, ready_path="/metrics")
        assert request(gw.url + META, key=alice)[0] == 200
    finally:
        gw.stop()
        serve.stop()


def test_every_bad_routes_file_at_start_up_is_exit_3_in_one_line(
    stack: Stack, tmp_path: Path
) -> None:
    # review finding: routes-file errors other than a bad URL could exit 1 (a
    # bug exit) with a traceback hint; each class of broken file, run for real
    import subprocess

    from tests.gateway.test_routes import bad_files
    from tests.serve._deployment import EXE, _env

    procs = {}
    for name, (path, message) in bad_files(tmp_path).items():
        args = gateway_args(path, stack.dep, free_port())
        procs[name] = (
            subprocess.Popen(
                [*EXE, *args],
                cwd=tmp_path,
                env=_env(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            message,
        )
    for name, (proc, message) in procs.items():
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 3, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_a_port_out_of_range_is_a_usage_error(stack: Stack, tmp_path: Path) -> None:
    routes, _ = fresh_routes(stack, tmp_path)
    r = run_cli(*gateway_args(routes, stack.dep, 70000), cwd=tmp_path)
    assert r.returncode == 2 and "--port" in r.stderr and "bug" not in r.stderr, r.stderr


def test_a_connection_slow_to_send_its_headers_is_closed(stack: Stack, tmp_path: Path) -> None:
    # red-team finding: aiohttp's default keeps a connection that never
    # finishes its request headers open for an hour (slowloris)
    import socket

    alice, digest = new_api_key()
    routes, _ = fresh_routes(stack, tmp_path, alice=digest)
    port = free_port()
    gw = Server(
        gateway_args(routes, stack.dep, port, "--idle-timeout", "1"),
        port,
        cwd=tmp_path,
        ready_path="/healthz",
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /demo/v2 HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 8:
                try:
                    s.sendall(b"X-Drip: 1\r\n")
                    time.sleep(0.2)
                except OSError:
                    closed = True
                    break
            assert closed and time.monotonic() - t0 < 8
        # a request that finishes in time is served, slow upstream or not
        assert request(gw.url + "/slowok/x", key=alice)[0] == 200
    finally:
        gw.stop()
