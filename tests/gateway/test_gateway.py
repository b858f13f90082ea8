"""The gateway as a real process in front of a real model service (and a relay that
misbehaves on purpose): keys, routes, decryption, refusals, upstream failures, logs."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest

from modelseal.envelope import MEDIA_TYPE
from tests.gateway.conftest import Stack, request
from tests.serve._deployment import MODEL_ID

META = f"/v2/models/{MODEL_ID}"
INFER = f"{META}/infer"
X = [[1.0, 2.0, 3.0, 4.0]]
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X[0]}]}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def infer_count(stack: Stack) -> float:
    return stack.metric(stack.serve, "modelseal_serve_requests_total", route="infer")


def test_decrypts_the_model_services_answers(stack: Stack) -> None:
    gw = stack.gateway.url
    for header in ("Authorization", "X-Api-Key"):
        status, body, headers = request(
            gw + "/demo" + INFER, key=stack.keys["alice"], body=BODY, header=header
        )
        assert status == 200, body
        assert headers["Content-Type"] == "application/json"
        y = json.loads(body)["outputs"][0]["data"]
        np.testing.assert_allclose(y, stack.dep.expected(np.array(X, np.float32))[0], rtol=1e-6)
        assert len(headers["X-Modelseal-Request-Id"]) >= 16
    status, body, _ = request(gw + "/demo" + META, key=stack.keys["alice"])
    assert status == 200
    assert json.loads(body)["inputs"][0]["name"] == "x"
    # an error from the model service comes through decrypted with its status
    status, body, _ = request(gw + "/demo" + INFER, key=stack.keys["alice"], body={"inputs": 1})
    assert status == 400
    assert "inputs" in json.loads(body)["error"]


def test_the_model_service_called_directly_answers_only_envelopes(stack: Stack) -> None:
    for path, body in ((INFER, BODY), (META, None), ("/v2/models/nope/infer", BODY)):
        _status, data, headers = request(stack.serve.url + path, body=body)
        assert headers["Content-Type"] == MEDIA_TYPE, path
        assert data.startswith(b"MSEV")
        assert b"outputs" not in data and b"error" not in data and b'"x"' not in data


def test_no_or_a_wrong_key_is_401_and_the_model_service_sees_nothing(stack: Stack) -> None:
    before_serve, before_relay = infer_count(stack), stack.relay.seen
    gw = stack.gateway.url
    cases = [
        (None, "Authorization"),
        ("msk_wrong", "Authorization"),
        ("msk_wrong", "X-Api-Key"),
        (stack.keys["alice"][:-1], "Authorization"),
    ]
    for key, header in cases:
        for path in ("/demo" + INFER, "/tamper" + INFER, "/nowhere"):
            status, _body, headers = request(gw + path, key=key, body=BODY, header=header)
            assert status == 401, (key, path)
            assert headers.get("WWW-Authenticate") == "Bearer"
    status, _, _ = request(gw + "/demo" + INFER, body=BODY, header="Authorization", key=None)
    assert status == 401
    assert infer_count(stack) == before_serve
    assert stack.relay.seen == before_relay


def test_forbidden_route_unknown_prefix_and_prefix_boundaries(stack: Stack) -> None:
    gw, bob, alice = stack.gateway.url, stack.keys["bob"], stack.keys["alice"]
    before = infer_count(stack)
    status, body, _ = request(gw + "/demo" + INFER, key=bob, body=BODY)
    assert status == 403 and b"may not use route 'demo'" in body
    assert infer_count(stack) == before
    assert request(gw + "/nothing/here", key=alice)[0] == 404
    assert request(gw + "/demox" + META, key=alice)[0] == 404


def test_dot_segments_and_encoded_separators_cannot_leave_a_keys_route(stack: Stack) -> None:
    # review finding: the route was matched on the decoded path and the upstream
    # URL resolved "..", so bob (route "big" only) reached the "demo" model
    gw, bob = stack.gateway.url, stack.keys["bob"]
    before = infer_count(stack)
    for path in (
        "/big/%2e%2e/demo" + INFER,
        "/big/%2E%2E/demo" + INFER,
        "/big/../demo" + INFER,
        "/big/..%2Fdemo" + INFER,
        "/big/x%3Fq=1",
        "/big/./x",
    ):
        status, body, _ = request(gw + path, key=bob, body=BODY)
        assert status == 400, path
        assert b"dot segments or encoded separators" in body
    assert infer_count(stack) == before


def test_tampered_replayed_and_wrong_key_envelopes_are_refused(stack: Stack) -> None:
    gw, alice = stack.gateway.url, stack.keys["alice"]
    expected = {
        "/tamper": "authentication failed",
        "/replay": "another request",
        "/wrongkey": "is for gateway key",
        "/leak": "without an envelope",
    }
    for prefix, message in expected.items():
        status, body, _ = request(gw + prefix + INFER, key=alice, body=BODY)
        assert status == 502, prefix
        error = json.loads(body)["error"]
        assert message in error, (prefix, error)
        assert "outputs" not in body.decode()
    for reason in ("authentication", "wrong_key_id", "not_an_envelope"):
        assert (
            stack.metric(stack.gateway, "modelseal_gateway_envelope_failures_total", reason=reason)
            >= 1
        )


def test_upstream_down_is_502_and_slow_is_504(stack: Stack) -> None:
    gw, alice = stack.gateway.url, stack.keys["alice"]
    status, body, _ = request(gw + "/down/v2", key=alice)
    assert status == 502 and b"unreachable" in body
    status, body, _ = request(gw + "/slow/v2", key=alice)
    assert status == 504 and b"did not answer in 0.5s" in body


def test_large_bodies_stream_through_plain_routes(stack: Stack) -> None:
    status, body, _ = request(stack.gateway.url + "/big/anything", key=stack.keys["bob"])
    assert status == 200
    assert len(body) == 48 * 65536 and set(body) == {ord("x")}


def test_one_unwrap_per_session_key_and_metrics(stack: Stack) -> None:
    gw, alice = stack.gateway.url, stack.keys["alice"]
    assert request(gw + "/demo" + INFER, body=BODY)[0] == 401
    assert request(gw + "/demo" + INFER, key=alice, body=BODY)[0] == 200  # key now cached
    unwraps = stack.metric(stack.gateway, "modelseal_gateway_sm2_unwraps_total")
    for _ in range(30):
        assert request(gw + "/demo" + INFER, key=alice, body=BODY)[0] == 200
    assert stack.metric(stack.gateway, "modelseal_gateway_sm2_unwraps_total") == unwraps
    assert (
        stack.metric(stack.gateway, "modelseal_gateway_envelopes_opened_total", route="demo") >= 30
    )
    assert (
        stack.metric(stack.gateway, "modelseal_gateway_requests_total", route="demo", status="200")
        >= 30
    )
    assert stack.metric(stack.gateway, "modelseal_gateway_refused_total", reason="no_key") >= 1


def test_access_log_has_one_line_per_request_without_keys_or_bodies(stack: Stack) -> None:
    gw, alice = stack.gateway.url, stack.keys["alice"]
    status, _, headers = request(gw + "/demo" + INFER + "?secret=1", key=alice, body=BODY)
    assert status == 200
    rid = headers["X-Modelseal-Request-Id"]
    # access lines are written in batches, at most 50 ms after the request
    assert wait_until(lambda: rid in stack.gateway.output(), timeout=5)
    log = stack.gateway.output()
    lines = [json.loads(ln) for ln in log.splitlines() if ln.startswith("{")]
    mine = [ln for ln in lines if ln["rid"] == rid]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["key"] == "alice" and entry["route"] == "demo" and entry["status"] == 200
    assert entry["upstream_status"] == 200 and entry["path"] == "/demo" + INFER
    for secret in (alice, stack.keys["bob"], "secret=1", '"data"', "4.4389"):
        assert secret not in log


def test_what_goes_upstream_never_includes_the_users_key(stack: Stack) -> None:
    gw, alice = stack.gateway.url, stack.keys["alice"]
    for header in ("Authorization", "X-Api-Key"):
        status, body, headers = request(
            gw + "/echo/some/path?q=1", key=alice, body={"a": 1}, header=header
        )
        assert status == 200
        seen = json.loads(body)
        sent = {k.lower(): v for k, v in seen["headers"].items()}
        assert seen["path"] == "/echo/some/path?q=1"  # the relay's base path + the rest
        assert "authorization" not in sent and "x-api-key" not in sent
        assert alice not in body.decode()
        assert sent["x-modelseal-request-id"] == headers["X-Modelseal-Request-Id"]
        assert sent["x-forwarded-prefix"] == "/echo"
        assert json.loads(seen["body"]) == {"a": 1}
    # a client cannot choose the request id an envelope is bound to
    req = urllib.request.Request(
        gw + "/echo/x",
        headers={"Authorization": f"Bearer {alice}", "X-Modelseal-Request-Id": "chosen"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        sent = {k.lower(): v for k, v in json.loads(r.read())["headers"].items()}
    assert sent["x-modelseal-request-id"] not in ("chosen", "chosen, chosen")
    assert len(sent["x-modelseal-request-id"]) >= 16


def _raw(gw: str, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    host, port = gw.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(method, path, headers=headers)
    return conn.getresponse()


def test_an_upstream_breaking_off_mid_body_is_an_error_for_the_client(stack: Stack) -> None:
    # review finding: a plain route's answer that the model service broke off
    # reached the client as a complete-looking 200 (chunked terminator added)
    auth = {"Authorization": f"Bearer {stack.keys['alice']}"}
    broken = stack.metric(stack.gateway, "modelseal_gateway_upstream_errors_total", kind="broken")
    for route, declared in (("/die/x", None), ("/short/x", str(3 * 1024 * 1024))):
        r = _raw(stack.gateway.url, "GET", route, auth)
        assert r.status == 200  # the status line was already out
        assert r.headers["Content-Length"] == declared
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            r.read()
    assert wait_until(
        lambda: (
            stack.metric(stack.gateway, "modelseal_gateway_upstream_errors_total", kind="broken")
            == broken + 2
        )
    )
    # the gateway itself is fine afterwards
    assert request(stack.gateway.url + "/big/x", key=stack.keys["bob"])[0] == 200


def test_a_streamed_answer_outlasting_the_routes_timeout_is_cut_off(stack: Stack) -> None:
    # timeout_s covers the whole exchange: a plain route's answer still
    # streaming when it ends is aborted, never ended as if complete
    auth = {"Authorization": f"Bearer {stack.keys['alice']}"}
    t0 = time.monotonic()
    r = _raw(stack.gateway.url, "GET", "/drip/x", auth)
    assert r.status == 200
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        r.read()
    assert time.monotonic() - t0 < 1.8  # the relay would take 2 s
    assert wait_until(lambda: "broke off mid-answer" in stack.gateway.output())
    assert "Traceback" not in stack.gateway.output()


def test_head_on_a_decrypting_route_is_get_without_the_body(stack: Stack) -> None:
    # review finding: HEAD got the service's body-less envelope answer -> 502
    auth = {"Authorization": f"Bearer {stack.keys['alice']}"}
    r = _raw(stack.gateway.url, "HEAD", "/demo" + META, auth)
    assert r.status == 200, r.read()
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.read() == b""
    _, body, _ = request(stack.gateway.url + "/demo" + META, key=stack.keys["alice"])
    assert int(r.headers["Content-Length"]) == len(body)
    # inference is POST only: HEAD is the service's own (decrypted) 405, not a 502
    r = _raw(stack.gateway.url, "HEAD", "/demo" + INFER, auth)
    assert r.status == 405 and r.read() == b""


def test_client_sent_forwarding_headers_are_replaced(stack: Stack) -> None:
    # review finding: Forwarded, X-Forwarded-Host, X-Real-IP, X-Forwarded-Proto
    # passed upstream as the client wrote them
    forged = {
        "Forwarded": "for=10.9.9.9;proto=https",
        "X-Forwarded-For": "10.9.9.9",
        "X-Forwarded-Host": "admin.internal",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Prefix": "/admin",
        "X-Real-IP": "10.9.9.9",
        "True-Client-IP": "10.9.9.9",
        "X-Original-URL": "/admin",
        "X-Rewrite-URL": "/admin",
    }
    r = _raw(
        stack.gateway.url,
        "GET",
        "/echo/x",
        {"Authorization": f"Bearer {stack.keys['alice']}", **forged},
    )
    assert r.status == 200
    sent = {k.lower(): v for k, v in json.loads(r.read())["headers"].items()}
    for name in ("forwarded", "x-forwarded-port", "true-client-ip", "x-original-url"):
        assert name not in sent
    assert "x-rewrite-url" not in sent
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-real-ip"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"] == stack.gateway.url.removeprefix("http://")
    assert sent["x-forwarded-prefix"] == "/echo"
    assert "10.9.9.9" not in json.dumps(sent) and "/admin" not in json.dumps(sent)


def test_a_compressed_request_body_goes_upstream_as_sent(stack: Stack) -> None:
    # red-team finding: the gateway inflated request bodies itself, and a body
    # that was not valid gzip was a 500 with a traceback in the log
    r = _raw_body(
        stack.gateway.url,
        "/echo/x",
        {"Authorization": f"Bearer {stack.keys['alice']}", "Content-Encoding": "gzip"},
        b"abcd",
    )
    assert r.status == 200
    seen = json.loads(r.read())
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert sent["content-encoding"] == "gzip" and seen["body"] == "abcd"


def test_a_malformed_request_body_is_400_without_a_traceback(stack: Stack) -> None:
    host, port = stack.gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(
            b"POST /echo/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + stack.keys["alice"].encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n"
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n", 1)[0]
    assert wait_until(lambda: "BadHttpMessage" in stack.gateway.output())
    assert "Traceback" not in stack.gateway.output()


def _raw_body(gw: str, path: str, headers: dict[str, str], body: bytes) -> http.client.HTTPResponse:
    host, port = gw.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request("POST", path, body=body, headers=headers)
    return conn.getresponse()


def test_large_and_chunked_uploads_stream_to_the_model_service(stack: Stack) -> None:
    # over 1 MiB with a Content-Length, and chunked without one: both stream
    # upstream through the gateway's own client and the answer is decrypted
    x = np.arange(60000 * 4, dtype=np.float32).reshape(60000, 4) / 1000
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [60000, 4], "data": x.ravel().tolist()}
            ]
        }
    ).encode()
    assert len(body) > 1024 * 1024
    auth = {"Authorization": f"Bearer {stack.keys['alice']}", "Content-Type": "application/json"}
    host, port = stack.gateway.url.removeprefix("http://").split(":")
    for chunked in (False, True):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        if chunked:
            pieces = (body[i : i + 100_000] for i in range(0, len(body), 100_000))
            conn.request("POST", "/demo" + INFER, body=pieces, headers=auth, encode_chunked=True)
        else:
            conn.request("POST", "/demo" + INFER, body=body, headers=auth)
        r = conn.getresponse()
        doc = json.loads(r.read())
        assert r.status == 200, doc
        y = np.array(doc["outputs"][0]["data"], np.float32).reshape(doc["outputs"][0]["shape"])
        np.testing.assert_allclose(y[-3:], stack.dep.expected(x[-3:]), rtol=1e-5)
        conn.close()
