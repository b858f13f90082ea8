"""``modelseal serve`` as a real process on loopback: start-up failures are one line and
a documented exit code; SIGTERM lets requests in flight finish; workers share metrics."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.serve._deployment import (
    MODEL_ID,
    Deployment,
    Server,
    free_port,
    make_deployment,
    run_cli,
    serve_args,
)

INFER = f"/v2/models/{MODEL_ID}/infer"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return make_deployment(tmp_path_factory.mktemp("dep"))


def post(url: str, x: list[list[float]], timeout: float = 30) -> dict[str, object]:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [len(x), 4],
                    "data": [v for row in x for v in row],
                }
            ]
        }
    ).encode()
    req = urllib.request.Request(
        url + INFER, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_handler_is_one_line_and_exit_2(dep: Deployment, tmp_path: Path) -> None:
    r = run_cli(*serve_args(dep, free_port(), "--handler", "nope_mod:X"), cwd=tmp_path)
    assert r.returncode == 2
    assert "cannot import handler module" in one_error_line(r.stderr)


def test_bad_license_is_one_line_and_a_license_exit_code(dep: Deployment, tmp_path: Path) -> None:
    forged = tmp_path / "forged.jwt"
    token = dep.license.read_text()
    head, payload, sig = token.split(".")
    forged.write_text(f"{head}.{payload}.{sig[:-4]}AAAA")
    args = serve_args(dep, free_port())
    args[args.index(str(dep.license))] = str(forged)
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode >= 10, r.stderr
    assert "not licensed" in one_error_line(r.stderr)


def test_port_in_use_is_one_line_and_exit_21(dep: Deployment, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_cli(*serve_args(dep, port), cwd=tmp_path)
    assert r.returncode == 26
    assert "already in use" in one_error_line(r.stderr)


def test_sigterm_lets_the_request_in_flight_finish(dep: Deployment, tmp_path: Path) -> None:
    port = free_port()
    server = Server(
        serve_args(dep, port, "--handler", "tests.serve.slow_handler:SlowOnnx", envelope=False),
        port,
        cwd=tmp_path,
        ready_path="/v2/health/ready",
    )
    result: dict[str, object] = {}

    def slow_call() -> None:
        try:
            result["doc"] = post(server.url, [[1.5, 0, 0, 0]])
        except Exception as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.5)  # the request is inside predict() now
    server.proc.send_signal(signal.SIGTERM)
    t.join(30)
    server.proc.wait(30)
    assert "error" not in result, result
    out = result["doc"]["outputs"][0]  # type: ignore[index]
    np.testing.assert_allclose(
        out["data"], dep.expected(np.array([[1.5, 0, 0, 0]], np.float32))[0], rtol=1e-6
    )
    with pytest.raises(OSError, match=r"Connection refused"):
        post(server.url, [[0, 0, 0, 0]], timeout=2)  # and it stopped listening


def test_two_workers_answer_and_metrics_cover_both(dep: Deployment, tmp_path: Path) -> None:
    port = free_port()
    server = Server(
        serve_args(dep, port, "--workers", "2", envelope=False),
        port,
        cwd=tmp_path,
        ready_path="/v2/health/ready",
    )
    try:
        for _ in range(20):
            post(server.url, [[1, 2, 3, 4]])
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith("modelseal_serve_requests_total") and 'route="infer"' in ln
        )
        assert float(line.rsplit(" ", 1)[1]) == 20.0
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
