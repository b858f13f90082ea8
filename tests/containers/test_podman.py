"""The patent's property with real containers: one image, licensed at run time.

The same image refuses to start without a license (one line), refuses a
license bound to another device, answers only envelopes when called
directly, and through ``modelseal gateway`` gives a ``tritonclient``
prediction equal to the plain model's. Deleting the deployment removes the
container and frees its ports. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelseal.deploy import (
    InMemoryNodePortStore,
    NodePortAllocator,
    NodePortRange,
    load_bundle,
    render_manifests,
)
from modelseal.deploy.backends import DeploymentNotFoundError, wait_ready
from modelseal.deploy.backends.podman import PodmanBackend, listening_ports
from modelseal.deploy.validate import validate_manifests
from modelseal.envelope import MEDIA_TYPE
from modelseal.gateway import new_api_key
from tests.containers.conftest import ModelImage, license_for
from tests.serve._deployment import MODEL_ID, Server, free_port

httpclient = pytest.importorskip("tritonclient.http")

#: Container names are global on the machine: a namespace of this run's own
#: keeps two test runs (two checkouts, CI and a developer) apart.
NS = f"t{os.getpid()}"


def _spec(folder: Path, image: ModelImage, name: str, license_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "license.jwt").write_text(license_text)
    (folder / "gateway-sm2.pub").write_bytes(image.gateway_pub.read_bytes())
    spec = {
        "apiVersion": "modelseal/v1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"name": "classifier", "version": "1"},
            # By tag and digest, as the Kubernetes manifests reference it.
            "image": f"{image.tag}@{image.digest}",
            "containerPort": 8080,
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            "license": {"file": "license.jwt"},
            "envelopeKey": {"file": "gateway-sm2.pub"},
            "route": {"prefix": "/demo"},
        },
    }
    (folder / "deploy.yaml").write_text(yaml.safe_dump(spec))
    return folder / "deploy.yaml"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanBackend]:
    # One restart before Failed keeps the refusal test short; a state folder
    # of its own keeps these tests' hostname key and inputs apart.
    # A long stop timeout makes "stopped at once by SIGTERM" unmistakable
    # even on a loaded machine (a server ignoring SIGTERM would take 30 s).
    b = PodmanBackend(
        state_dir=tmp_path_factory.mktemp("podman-state"), max_restarts=1, stop_timeout_s=30
    )
    yield b
    for status in b.list():
        if status.namespace == NS:
            b.delete(status.namespace, status.name)
    b.close()


def _port_free(port: int) -> bool:
    """Nothing listens on it and a server could bind it (as servers do: SO_REUSEADDR,
    so connections of the deleted container still in TIME_WAIT do not count)."""
    if port in listening_ports():
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_image_without_a_license_refuses_to_start_with_one_line(
    model_image: ModelImage, backend: PodmanBackend
) -> None:
    proc = backend.podman.run(["run", "--rm", "--pull=never", model_image.tag], check=False)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: no license at /etc/modelseal/license/license.jwt")
    # ... and it holds none: no license or private key anywhere in its file system.
    found = backend.podman.run(
        [
            "run",
            "--rm",
            "--pull=never",
            "--entrypoint",
            '["/bin/sh", "-c"]',
            model_image.tag,
            "grep -rlE 'BEGIN (EC |)PRIVATE KEY|eyJhbGciOi' /opt /etc /home /var/lib/modelseal "
            "2>/dev/null | grep -v /opt/modelseal/lib || true; id -u",
        ]
    ).stdout.split()
    assert found == ["10001"], found  # nothing found, and it runs as the image's user


def test_a_license_bound_to_another_device_is_refused(
    model_image: ModelImage, backend: PodmanBackend, tmp_path: Path
) -> None:
    # Made inside the same image, but as another deployment: another hostname.
    other = backend.device_request(NS, "someone-else", model_image.tag)
    spec = _spec(tmp_path, model_image, "wrong-device", license_for(model_image, other))
    bundle = load_bundle(spec)
    port = free_port()
    backend.apply(bundle, [port])
    deadline = time.monotonic() + 90
    status = backend.status(NS, "wrong-device")
    while status.phase != "Failed" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = backend.status(NS, "wrong-device")
    assert status.phase == "Failed", status
    assert "not licensed (wrong_device)" in status.message
    assert status.ready_replicas == 0
    logs = backend.logs(NS, "wrong-device")
    assert "error: not licensed (wrong_device)" in logs
    assert "Traceback" not in logs
    assert backend.delete(NS, "wrong-device")


def test_deploy_predict_through_the_gateway_then_delete(
    model_image: ModelImage, backend: PodmanBackend, tmp_path: Path
) -> None:
    request = backend.device_request(NS, "classifier", model_image.tag)
    environment = json.loads(request)["environment"]
    assert environment["virtualization"] == "container"
    spec = _spec(tmp_path / "spec", model_image, "classifier", license_for(model_image, request))
    bundle = load_bundle(spec)
    # The same bundle renders the Kubernetes manifests: same image reference,
    # the license in a Secret at the path the image's launcher reads.
    objects = render_manifests(bundle, [30080])
    validate_manifests(objects, versions=["1.30"])
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"{model_image.tag}@{model_image.digest}"
    assert "command" not in pod["containers"][0]  # the image's own entry point runs
    # The top of the NodePort range: other suites on this shared machine (the
    # local backend's tests) start at 30000 and could take a port we free.
    allocator = NodePortAllocator(
        InMemoryNodePortStore(), NodePortRange(32500, 32767), cluster_used=backend.used_node_ports
    )
    ports = allocator.allocate(f"{NS}/classifier", bundle.deployment.spec.node_port_count)

    started = time.monotonic()
    backend.apply(bundle, ports)
    status = wait_ready(backend, NS, "classifier", timeout_s=90)
    ready_after = time.monotonic() - started
    assert status.ready, (status, backend.logs(NS, "classifier"))
    assert status.forward_url == f"http://127.0.0.1:{ports[0]}"
    assert status.details["image_id"] == model_image.image_id
    container = status.details["container"]
    # Applying the same spec again changes nothing (same container, no restart).
    assert backend.apply(bundle, ports).details["container"] == container
    assert [s.name for s in backend.list() if s.namespace == NS] == ["classifier"]

    # Called directly, the container answers only envelopes.
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ).encode()
    direct = urllib.request.Request(
        f"{status.forward_url}/v2/models/{MODEL_ID}/infer",
        data=body,
        headers={"Content-Type": "application/json", "X-Modelseal-Request-Id": "direct-1"},
    )
    with urllib.request.urlopen(direct, timeout=20) as answer:
        assert answer.headers["Content-Type"].startswith(MEDIA_TYPE)
        sealed = answer.read()
    assert b'"outputs"' not in sealed and b"FP32" not in sealed

    # Through the gateway (routes file pointing at forward_url), tritonclient reads it.
    key, digest = new_api_key()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "routes": [
                    {
                        "id": "demo",
                        "name": "demo",
                        "prefix": bundle.deployment.spec.route.prefix,  # type: ignore[union-attr]
                        "forward_url": status.forward_url,
                    }
                ],
                "api_keys": [{"name": "alice", "sha256": digest, "routes": ["*"]}],
            }
        )
    )
    gp = free_port()
    gateway = Server(
        [
            "gateway",
            "--routes",
            str(routes),
            "--envelope-private-key",
            str(model_image.gateway_pem),
            "--port",
            str(gp),
        ],
        gp,
        cwd=tmp_path,
        ready_path="/healthz",
    )
    try:
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{gp}/demo")
        auth = {"Authorization": f"Bearer {key}"}
        x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(MODEL_ID, [inp], headers=auth, request_id="podman-1")
        np.testing.assert_allclose(result.as_numpy("y"), model_image.expected(x), rtol=1e-5)
        client.close()
    finally:
        gateway.stop()

    # A crash (kill -9 of the server inside the container, from the host) is
    # restarted by the restart policy; the deployment is Running again.
    inspect = json.loads(backend.podman.run(["container", "inspect", container]).stdout)[0]
    tini = int(inspect["State"]["Pid"])
    children = Path(f"/proc/{tini}/task/{tini}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    deadline = time.monotonic() + 60
    status = backend.status(NS, "classifier")
    while not (status.ready and status.restarts == 1) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = backend.status(NS, "classifier")
    assert status.ready and status.restarts == 1, status
    assert status.details["container"] == container  # restarted in place, same ports

    # A renewed license re-creates the container with the new file mounted.
    renewed = license_for(model_image, request)
    (tmp_path / "spec" / "license.jwt").write_text(renewed)
    status = backend.apply(load_bundle(spec), ports)
    assert status.details["container"] != container
    folder = backend.state_dir / "deployments" / NS / "classifier"
    assert (folder / "license.jwt").read_text() == renewed
    assert wait_ready(backend, NS, "classifier", timeout_s=90).ready

    # Delete: SIGTERM reaches the server through tini at once (the stop timeout
    # is 30 s: a server that ignored SIGTERM would take that long, then be killed).
    stop_started = time.monotonic()
    assert backend.delete(NS, "classifier")
    stop_seconds = time.monotonic() - stop_started
    assert stop_seconds < 15, stop_seconds
    assert allocator.release(f"{NS}/classifier") == ports
    names = backend.podman.run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    assert f"modelseal-{NS}-classifier" not in names
    with pytest.raises(DeploymentNotFoundError):
        backend.status(NS, "classifier")
    assert not backend.delete(NS, "classifier")
    assert _port_free(ports[0])
    assert not (backend.state_dir / "deployments" / NS / "classifier").exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{status.forward_url}/v2/health/ready", timeout=2)
    print(
        f"\nimage build {model_image.build_seconds:.1f}s, ready after apply {ready_after:.1f}s, "
        f"delete {stop_seconds:.1f}s"
    )


def test_sigterm_ends_a_python_that_has_no_handler(
    model_image: ModelImage, backend: PodmanBackend
) -> None:
    """tini is PID 1 in the image: a Python still loading (no SIGTERM handler yet)
    dies of SIGTERM at once, where as PID 1 it would ignore it until killed."""
    info = json.loads(backend.podman.run(["image", "inspect", model_image.tag]).stdout)[0]
    entrypoint = info["Config"]["Entrypoint"]
    assert entrypoint[:3] == ["/usr/bin/tini", "-g", "--"]
    sleeper = json.dumps(
        [*entrypoint[:3], "/opt/modelseal/bin/python", "-c", "import time; time.sleep(60)"]
    )
    cid = backend.podman.run(
        ["run", "-d", "--pull=never", "--entrypoint", sleeper, model_image.tag]
    ).stdout.strip()
    try:
        started = time.monotonic()
        backend.podman.run(["stop", "-t", "30", cid], timeout=60)
        assert time.monotonic() - started < 15  # 30 if SIGTERM were ignored
    finally:
        backend.podman.run(["rm", "-f", cid], check=False)
