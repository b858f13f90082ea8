"""The local backend behind the real gateway: sealed outputs, a decrypted prediction.

A deployment with ``envelopeKey`` on the local backend seals every answer
for the gateway (the key from the bundle reached ``serve`` through the
state directory); the gateway, pointed at the deployment's ``forward_url``
under the spec's route prefix, opens them for a caller with an API key,
and keeps doing so after a replica is killed and comes back.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelseal.deploy import load_bundle
from modelseal.deploy.backends import wait_ready
from modelseal.deploy.backends.local import LocalBackend
from modelseal.envelope import MEDIA_TYPE
from modelseal.gateway import new_api_key
from tests.deploy.test_local import FAST, SPEC, pids_of
from tests.gateway.conftest import gateway_args, request
from tests.serve._deployment import MODEL_ID, Server, free_port, make_deployment


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    # Guard state of the replicas in the test's folder, not in ~/.local.
    monkeypatch.setenv("MODELSEAL_STATE_DIR", str(tmp_path / "guard-state"))
    made = LocalBackend(tmp_path / "data", policy=FAST)
    yield made
    for status in made.list():
        made.delete(status.namespace, status.name)
    made.close()


def test_prediction_through_the_gateway_survives_a_killed_replica(
    tmp_path: Path, backend: LocalBackend
) -> None:
    dep = make_deployment(tmp_path / "model")
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "vendor.pub").write_bytes(dep.trust.read_bytes())
    (folder / "gateway-sm2.pub").write_bytes(dep.gateway_pub.read_bytes())
    spec = folder / "deploy.yaml"
    spec.write_text(
        SPEC.format(name="demo", replicas=1, root=dep.root, license=dep.license).replace(
            "trust: {file: vendor.pub}",
            "trust: {file: vendor.pub}\n  envelopeKey: {file: gateway-sm2.pub}",
        )
    )
    bundle = load_bundle(spec)
    assert bundle.deployment.spec.route is not None
    backend.apply(bundle, [free_port()])
    status = wait_ready(backend, "models", "demo", timeout_s=90)
    assert status.ready, status
    infer = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

    # Directly on the NodePort: only an envelope (a copy run elsewhere answers ciphertext).
    code, body, headers = request(f"{status.forward_url}/v2/models/{MODEL_ID}/infer", body=infer)
    assert code == 200 and headers["Content-Type"] == MEDIA_TYPE
    assert b"outputs" not in body

    key, digest = new_api_key()
    routes = tmp_path / "routes.yaml"
    prefix = bundle.deployment.spec.route.prefix
    routes.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "routes": [
                    {
                        "id": "demo",
                        "name": "demo",
                        "prefix": prefix,
                        "forward_url": status.forward_url,
                    }
                ],
                "api_keys": [{"name": "user", "sha256": digest, "routes": ["demo"]}],
            }
        )
    )
    port = free_port()
    gateway = Server(gateway_args(routes, dep, port), port, cwd=tmp_path, ready_path="/healthz")
    try:
        url = f"{gateway.url}{prefix}/v2/models/{MODEL_ID}/infer"
        expected = dep.expected(np.array([[1, 2, 3, 4]], np.float32))[0]
        code, body, _ = request(url, key=key, body=infer)
        assert code == 200, body
        np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"], expected, rtol=1e-5)
        assert request(url, body=infer)[0] == 401  # no API key, no model

        os.kill(pids_of(status)[0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = backend.status("models", "demo")
            if now.restarts >= 1 and now.ready:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the replica did not come back: {now}")
        code, body, _ = request(url, key=key, body=infer)
        assert code == 200, body
        np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"], expected, rtol=1e-5)
    finally:
        gateway.stop()
