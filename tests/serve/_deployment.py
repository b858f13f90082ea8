"""A sealed ONNX model licensed to this machine, and real server processes on loopback.

Shared by the serve, gateway and end-to-end tests. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import modelseal
from modelseal.crypto import generate_private_key
from modelseal.device import collect, make_request
from modelseal.license import issue_license

MODEL_ID = "acme/classifier"
EXE = [sys.executable, "-m", "modelseal.cli"]


@dataclass
class Deployment:
    root: Path
    model: Path
    license: Path
    trust: Path
    gateway_pem: Path
    gateway_pub: Path
    weights: np.ndarray
    bias: np.ndarray

    def expected(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.weights + self.bias).astype(np.float32)


def make_deployment(
    root: Path,
    *,
    features: tuple[str, ...] = ("classify",),
    outputs: int = 3,
    max_calls: int | None = None,
) -> Deployment:
    """``outputs`` sets the width of y (the benchmark uses it for ~1 KB responses)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, outputs)).astype(np.float32)
    b = rng.standard_normal(outputs).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    root.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(root / "model.onnx"))
    cek = modelseal.seal(root / "model.onnx", root / "model.mseal", model_id=MODEL_ID)
    (root / "model.onnx").unlink()
    vendor = generate_private_key("ed25519")
    vendor.public_key().save(root / "vendor.pub")
    token = issue_license(
        signing_key=vendor,
        issuer="acme",
        customer="hospital",
        audience=[MODEL_ID],
        request=make_request(collect(), label="test box"),
        content_keys=[(cek, MODEL_ID)],
        valid_for=timedelta(days=1),
        features=list(features),
        max_calls=max_calls,
    ).token
    (root / "license.jwt").write_text(token)
    gateway = generate_private_key("sm2")
    gateway.save(root / "gateway-sm2.pem")
    gateway.public_key().save(root / "gateway-sm2.pub")
    return Deployment(
        root,
        root / "model.mseal",
        root / "license.jwt",
        root / "vendor.pub",
        root / "gateway-sm2.pem",
        root / "gateway-sm2.pub",
        w,
        b,
    )


REPO = Path(__file__).resolve().parents[2]


def _env(cwd: Path) -> dict[str, str]:
    """The repo root on the path (test handlers live in tests/), state and HOME in tmp."""
    path = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    return {
        **os.environ,
        "PYTHONPATH": path,
        "MODELSEAL_STATE_DIR": str(cwd / "state"),
        "HOME": str(cwd),
        "COLUMNS": "200",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``modelseal`` server subprocess; stopped with SIGTERM (or -9) at the end."""

    def __init__(self, args: list[str], port: int, *, cwd: Path, ready_path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / f"server-{port}.log"
        env = _env(cwd)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*EXE, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server not ready in {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def run_cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = _env(cwd)
    return subprocess.run(
        [*EXE, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def serve_args(d: Deployment, port: int, *extra: str, envelope: bool = True) -> list[str]:
    args = [
        "serve",
        str(d.model),
        "--license",
        str(d.license),
        "--trust",
        str(d.trust),
        "--port",
        str(port),
    ]
    if envelope:
        args += ["--envelope-key", str(d.gateway_pub)]
    return args + list(extra)
