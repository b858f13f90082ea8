"""The issue's Done-when, with real processes and the real ``local`` backend.

A control plane process registers a vendor and a model, takes its documents,
creates the gateway's SM2 key, and deploys the model (supervised ``modelseal
serve`` on a NodePort). A ``modelseal gateway --controlplane`` process, with
its private key from the control plane, learns the route and the user's API
key and returns a decrypted prediction; a replica killed with ``kill -9``
comes back; deleting the deployment frees its port and its route.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serve._deployment import (
    MODEL_ID,
    Server,
    free_port,
    make_deployment,
    run_cli,
)

P = "/v1/platform"

SPEC = """\
apiVersion: modelseal/v1
kind: ModelDeployment
metadata: {{name: classifier, namespace: models}}
spec:
  model: {{name: classifier, version: "1.0.0"}}
  image: registry.example.com/acme/classifier:1.0.0
  containerPort: 8080
  command: ["modelseal", "serve", "/models/model.mseal", "--port", "8080", "--threads", "2"]
  replicas: 1
  volumes: [{{name: models, hostPath: {root}, mountPath: /models}}]
  license: {{file: license.jwt}}
  envelopeKey: {{file: gateway-sm2.pub}}
  trust: {{file: vendor.pub}}
  route: {{prefix: /classifier}}
"""


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _infer(url: str, key: str) -> tuple[int, Any]:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    ).encode()
    req = urllib.request.Request(
        f"{url}/classifier/v2/models/{MODEL_ID}/infer",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc)


def _port_listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_register_deploy_predict_through_the_gateway_and_delete(tmp_path: Path) -> None:
    dep = make_deployment(tmp_path / "model")
    data = tmp_path / "cp"
    owner = tmp_path / "owner.token"
    init = run_cli(
        "controlplane",
        "init",
        "--data-dir",
        data,
        "--vendor",
        "hospital-it",
        "--token-out",
        owner,
        cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    node_port = free_port()
    cp_port = free_port()
    os.environ["MODELSEAL_NODE_PORT_RANGE"] = f"{node_port}-{node_port}"
    try:
        cp = Server(
            ["controlplane", "--data-dir", str(data), "--port", str(cp_port)],
            cp_port,
            cwd=tmp_path,
            ready_path="/readyz",
        )
    finally:
        del os.environ["MODELSEAL_NODE_PORT_RANGE"]
    gateway: Server | None = None
    try:
        c = httpx.Client(
            base_url=cp.url,
            headers={"Authorization": f"Bearer {owner.read_text().strip()}"},
            timeout=60,
        )
        # the registry: a vendor, its model, the model's documents
        assert c.post(f"{P}/vendors", json={"name": "Acme AI", "business": "imaging"}).is_success
        model = c.post(
            f"{P}/models",
            json={
                "vendor": "Acme AI",
                "name": "classifier",
                "function": "classifies",
                "language": "Python",
                "version": {"version": "1.0.0"},
            },
        )
        assert model.status_code == 201, model.text
        for kind, name, content in [
            ("design", "design.pdf", b"%PDF-1.4\n%design\n"),
            ("usage", "usage.md", b"# Usage\nPOST /classifier/v2/models/acme/classifier/infer\n"),
            ("test", "tests.json", b'{"accuracy": 0.97}'),
        ]:
            up = c.post(
                f"{P}/models/classifier/documents",
                params={"kind": kind, "filename": name},
                content=content,
            )
            assert up.status_code == 201, up.text
            assert c.get(f"{P}/documents/{up.json()['id']}/content").content == content
        # the gateway's key lives on the platform; the deployment encrypts to it
        assert c.post(f"{P}/gateway/key").status_code == 201
        config = c.post(
            f"{P}/configs",
            json={
                "name": "classifier-prod",
                "spec": SPEC.format(root=dep.root),
                "model": "classifier",
            },
        )
        assert config.status_code == 201, config.text
        made = c.post(
            f"{P}/deployments",
            json={
                "config": "classifier-prod",
                "license": dep.license.read_text(),
                "trust": dep.trust.read_text(),
            },
        )
        assert made.status_code == 201, made.text
        d = made.json()
        assert d["node_ports"] == [node_port] and d["route"] == "classifier"
        status = _until(
            lambda: (s := c.get(f"{P}/deployments/{d['id']}/status").json()).get("ready") and s,
            120,
            "the deployment to be ready",
        )
        assert status["forward_url"] == f"http://127.0.0.1:{node_port}"

        # a model user's key, and a gateway that follows the control plane
        key = c.post(f"{P}/api-keys", json={"name": "radiology", "routes": ["classifier"]})
        assert key.status_code == 201
        issuer = c.post("/v1/tokens", json={"name": "gateway", "role": "issuer"}).json()["token"]
        (tmp_path / "gw.token").write_text(issuer)
        gw_port = free_port()
        gateway = Server(
            [
                "gateway",
                "--controlplane",
                cp.url,
                "--token-file",
                str(tmp_path / "gw.token"),
                "--controlplane-key",
                "--poll-interval",
                "0.3",
                "--port",
                str(gw_port),
            ],
            gw_port,
            cwd=tmp_path,
            ready_path="/healthz",
        )
        code, answer = _infer(gateway.url, key.json()["key"])
        assert code == 200, answer
        expected = dep.expected(np.array([[1, 2, 3, 4]], np.float32))[0]
        np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-5)
        # the model service itself answers only in envelopes: the plaintext came from the gateway
        direct = httpx.post(
            f"{status['forward_url']}/v2/models/{MODEL_ID}/infer",
            json={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
            },
            timeout=30,
        )
        assert direct.headers["content-type"].startswith("application/vnd.modelseal")
        assert _infer(gateway.url, "msk_not-a-key")[0] == 401

        # kill -9 the replica: the supervisor brings it back and predictions resume
        pid = int(status["details"]["pids"].split(",")[0])
        os.kill(pid, signal.SIGKILL)
        _until(
            lambda: (
                (s := c.get(f"{P}/deployments/{d['id']}/status").json())["restarts"] >= 1
                and s["ready"]
            ),
            120,
            "the killed replica to come back",
        )
        assert _until(lambda: _infer(gateway.url, key.json()["key"])[0] == 200, 30, "predictions")
        logs = c.get(f"{P}/deployments/{d['id']}/logs", params={"tail": 500}).json()["logs"]
        assert "SIGKILL" in logs

        # delete: the processes stop, the port and the route are free again
        gone = c.delete(f"{P}/deployments/{d['id']}")
        assert gone.status_code == 200 and gone.json()["node_ports"] == [node_port]
        assert c.get(f"{P}/nodeports").json() == {
            "range": f"{node_port}-{node_port}",
            "used": [],
            "recommended": [node_port],
        }
        assert c.get(f"{P}/routes").json() == []
        _until(lambda: not _port_listening(node_port), 30, "the NodePort to close")
        # the gateway learns it: the route is gone, and with it the only route the
        # user's key covered, so the key is no longer served either (401, not a 502)
        _until(lambda: _infer(gateway.url, key.json()["key"])[0] == 401, 30, "the route to go")
        assert c.get(f"{P}/gateway/config").json() == {"version": 1, "routes": [], "api_keys": []}
    finally:
        if gateway is not None:
            gateway.stop()
        cp.stop()
    assert "Traceback" not in cp.output()


@pytest.mark.parametrize("backend", ["kubernetes"])
def test_an_unreachable_backend_is_a_503_that_says_why(tmp_path: Path, backend: str) -> None:
    """No cluster here: deploying is refused with the backend's reason, nothing recorded."""
    from fastapi.testclient import TestClient

    from modelseal.controlplane import db
    from modelseal.controlplane.app import create_app
    from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
    from modelseal.controlplane.services.vendors import init_vendor
    from modelseal.controlplane.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "cp", deploy_backend=backend, node_port_range="30000-30001"
    )
    engine = db.make_engine(settings)
    db.migrate(engine)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    with db.transaction(db.session_factory(engine)) as session:
        _, token = init_vendor(session, box, name="acme", kty="ed25519")
    engine.dispose()
    dep = make_deployment(tmp_path / "model")
    spec = SPEC.format(root=dep.root).replace("  envelopeKey: {file: gateway-sm2.pub}\n", "")
    env = {"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with TestClient(create_app(settings)) as c:
            c.headers["Authorization"] = f"Bearer {token}"
            resp = c.post(
                f"{P}/deployments",
                json={
                    "spec": spec,
                    "license": dep.license.read_text(),
                    "trust": dep.trust.read_text(),
                },
            )
            assert resp.status_code in (502, 503), resp.text
            assert resp.json()["error"]["code"].startswith("backend_")
            assert c.get(f"{P}/deployments").json() == []
            assert c.get(f"{P}/nodeports").json()["used"] == []
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
