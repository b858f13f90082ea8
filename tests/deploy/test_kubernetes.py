"""The kubernetes backend against a fake API server over loopback: the calls themselves.

The official client sends real HTTP to ``tests/deploy/_kube_api.py``, which
records every request; the tests assert method, path, query (fieldManager,
force, dryRun, labelSelector), content type and body, and walk a rollout
through its states to check what ``status`` makes of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelseal.deploy import load_bundle, render_manifests
from modelseal.deploy.backends import (
    BackendError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    get_backend,
    wait_ready,
)
from modelseal.deploy.backends.kubernetes import KubernetesBackend
from modelseal.deploy.bundle import DeploymentBundle
from tests.deploy._kube_api import KubeApiServer
from tests.serve._deployment import free_port

NS, NAME = "models", "demo-classifier"
SELECTOR = "app.kubernetes.io/instance=demo-classifier,app.kubernetes.io/managed-by=modelseal"


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    srv = KubeApiServer()
    yield srv
    srv.close()


@pytest.fixture
def backend(server: KubeApiServer, tmp_path: Path) -> Iterator[KubernetesBackend]:
    made = get_backend("kubernetes", kubeconfig=server.kubeconfig(tmp_path / "kubeconfig"))
    assert isinstance(made, KubernetesBackend)
    yield made
    made.close()


@pytest.fixture
def bundle(demo_spec: Path) -> DeploymentBundle:
    return load_bundle(demo_spec)


def test_apply_is_server_side_apply_of_the_rendered_objects(
    server: KubeApiServer, backend: KubernetesBackend, bundle: DeploymentBundle
) -> None:
    status = backend.apply(bundle, [30080])
    api = server.api
    assert [(r.method, r.path) for r in api.requests[:6]] == [
        ("GET", f"/api/v1/namespaces/{NS}"),
        ("POST", "/api/v1/namespaces"),
        ("PATCH", f"/api/v1/namespaces/{NS}/secrets/{NAME}-license"),
        ("PATCH", f"/api/v1/namespaces/{NS}/configmaps/{NAME}-keys"),
        ("PATCH", f"/api/v1/namespaces/{NS}/services/{NAME}"),
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"),
    ]
    namespace = api.requests[1].body
    assert namespace["metadata"] == {
        "name": NS,
        "labels": {"app.kubernetes.io/managed-by": "modelseal"},
    }
    patches = api.calls("PATCH")
    assert {r.content_type for r in patches} == {"application/apply-patch+yaml"}
    assert all(r.query == {"fieldManager": "modelseal", "force": "true"} for r in patches)
    assert [r.body for r in patches] == render_manifests(bundle, [30080])
    assert status.phase == "Running" and status.ready
    assert status.node_ports == (30080,)
    assert status.forward_url == "http://127.0.0.1:30080"
    assert status.replicas == status.ready_replicas == 2
    pods = api.calls("GET", f"/namespaces/{NS}/pods")
    assert pods and pods[-1].query == {"labelSelector": SELECTOR}


def test_apply_again_updates_in_place_and_prunes_the_keys(
    server: KubeApiServer, backend: KubernetesBackend, demo_spec: Path
) -> None:
    backend.apply(load_bundle(demo_spec), [30080])
    first_uid = server.api.objects[("deployments", NS, NAME)]["metadata"]["uid"]
    server.api.requests.clear()
    text = demo_spec.read_text().replace("replicas: 2", "replicas: 3")
    demo_spec.write_text(text.replace("  envelopeKey: {file: gateway-sm2.pub}", ""))
    status = backend.apply(load_bundle(demo_spec), [30080])
    assert not server.api.calls("POST")  # the namespace exists now
    deployment = server.api.objects[("deployments", NS, NAME)]
    assert deployment["metadata"]["uid"] == first_uid
    assert deployment["metadata"]["generation"] == 2
    assert status.replicas == 3
    # No envelope key any more: the ConfigMap we made goes, nothing else does.
    assert [r.path for r in server.api.calls("DELETE")] == [
        f"/api/v1/namespaces/{NS}/configmaps/{NAME}-keys"
    ]
    assert ("configmaps", NS, f"{NAME}-keys") not in server.api.objects


def test_dry_run_stores_nothing(
    server: KubeApiServer, backend: KubernetesBackend, bundle: DeploymentBundle
) -> None:
    status = backend.apply(bundle, [30080], dry_run=True)
    # No namespace yet: its creation is dry-run, the objects cannot be.
    assert status.phase == "Pending" and f"namespace {NS} would be created" in status.message
    assert server.api.calls("POST")[0].query == {"dryRun": "All", "fieldManager": "modelseal"}
    assert not server.api.calls("PATCH")
    assert not server.api.namespaces and not server.api.objects

    server.api.namespaces[NS] = {"metadata": {"name": NS}}
    status = backend.apply(bundle, [30080], dry_run=True)
    patches = server.api.calls("PATCH")
    assert len(patches) == 4 and all(r.query["dryRun"] == "All" for r in patches)
    assert "accepted 4 object(s)" in status.message
    assert not server.api.objects


@pytest.mark.parametrize(
    ("rollout", "phase", "message", "restarts"),
    [
        ("progressing", "Pending", "rollout: 2 of 2 updated, 0 ready", 0),
        (
            "crashloop",
            "Degraded",
            "CrashLoopBackOff: back-off (last exit: error: not licensed (expired))",
            8,
        ),
        ("image", "Failed", 'ImagePullBackOff: Back-off pulling image "registry.example.com', 0),
        ("deadline", "Failed", "has timed out progressing", 0),
    ],
)
def test_status_reads_the_rollout(
    server: KubeApiServer,
    backend: KubernetesBackend,
    bundle: DeploymentBundle,
    rollout: str,
    phase: str,
    message: str,
    restarts: int,
) -> None:
    server.api.rollout = rollout
    backend.apply(bundle, [30080])
    status = backend.status(NS, NAME)
    assert status.phase == phase, status
    assert message in status.message
    assert status.restarts == restarts
    assert not status.ready


def test_wait_ready_follows_the_rollout(
    server: KubeApiServer, backend: KubernetesBackend, bundle: DeploymentBundle
) -> None:
    server.api.rollout = "progressing"
    backend.apply(bundle, [30080])
    polls = 0

    def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 3:
            server.api.rollout = "ready"

    status = wait_ready(backend, NS, NAME, timeout_s=60, sleep=sleep)
    assert status.ready and polls == 3


def test_logs_of_every_pod_merged_in_time_order(
    server: KubeApiServer, backend: KubernetesBackend, bundle: DeploymentBundle
) -> None:
    backend.apply(bundle, [30080])
    server.api.logs[f"{NAME}-7d9f-0"] = "2026-12-04T10:00:00Z start\n2026-12-04T10:00:02Z ready"
    server.api.logs[f"{NAME}-7d9f-1"] = "2026-12-04T10:00:01Z start"
    assert backend.logs(NS, NAME, tail=2) == (
        f"2026-12-04T10:00:01Z [pod {NAME}-7d9f-1] start\n"
        f"2026-12-04T10:00:02Z [pod {NAME}-7d9f-0] ready\n"
    )
    log_calls = server.api.calls("GET", "/log")
    assert log_calls[0].query == {"container": "model", "tailLines": "2", "timestamps": "true"}
    del server.api.logs[f"{NAME}-7d9f-1"]  # still starting: the API server answers 400
    assert "is waiting to start" in backend.logs(NS, NAME)


def test_delete_removes_only_our_objects(
    server: KubeApiServer, backend: KubernetesBackend, bundle: DeploymentBundle
) -> None:
    backend.apply(bundle, [30080])
    # Someone else's Secret with the name we would use: not ours, never deleted.
    server.api.objects[("secrets", NS, f"{NAME}-license")]["metadata"]["labels"] = {}
    server.api.requests.clear()
    assert backend.delete(NS, NAME) is True
    deletes = server.api.calls("DELETE")
    assert [r.path for r in deletes] == [
        f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}",
        f"/api/v1/namespaces/{NS}/services/{NAME}",
        f"/api/v1/namespaces/{NS}/configmaps/{NAME}-keys",
    ]
    assert all(r.query == {"propagationPolicy": "Background"} for r in deletes)
    assert list(server.api.objects) == [("secrets", NS, f"{NAME}-license")]
    assert backend.delete(NS, NAME) is False
    with pytest.raises(DeploymentNotFoundError):
        backend.status(NS, NAME)
    with pytest.raises(DeploymentNotFoundError):
        backend.logs(NS, NAME)


def test_list_and_used_node_ports_see_the_whole_cluster(
    server: KubeApiServer, backend: KubernetesBackend, bundle: DeploymentBundle
) -> None:
    backend.apply(bundle, [30080])
    server.api.objects[("services", "kube-system", "dashboard")] = {
        "metadata": {"name": "dashboard", "namespace": "kube-system", "labels": {}},
        "spec": {"type": "NodePort", "ports": [{"port": 443, "nodePort": 30500}]},
    }
    server.api.objects[("services", "kube-system", "dns")] = {
        "metadata": {"name": "dns", "namespace": "kube-system"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 53}]},
    }
    assert backend.used_node_ports() == {30080, 30500}
    assert server.api.calls("GET", "/api/v1/services")[-1].path == "/api/v1/services"
    listed = backend.list()
    assert [(s.namespace, s.name, s.phase) for s in listed] == [(NS, NAME, "Running")]
    assert server.api.calls("GET", "/apis/apps/v1/deployments")[-1].query == {
        "labelSelector": "app.kubernetes.io/managed-by=modelseal"
    }


def test_credentials_rbac_and_reachability_are_typed_errors(
    server: KubeApiServer, tmp_path: Path, bundle: DeploymentBundle
) -> None:
    wrong = KubernetesBackend(server.kubeconfig(tmp_path / "wrong", token="nope"))
    with pytest.raises(BackendError, match=r"refused our credentials \(401\)"):
        wrong.apply(bundle, [30080])
    wrong.close()

    good = KubernetesBackend(server.kubeconfig(tmp_path / "good"))
    server.api.forbid.add("services")
    with pytest.raises(BackendError, match=r"RBAC \(403\).*docs/deploy.md"):
        good.used_node_ports()
    good.close()

    dead = KubeApiServer()
    config = dead.kubeconfig(tmp_path / "dead")
    dead.close()
    unreachable = KubernetesBackend(config, request_timeout_s=2)
    with pytest.raises(BackendUnavailableError, match="cannot reach the Kubernetes API server"):
        unreachable.status(NS, NAME)
    unreachable.close()

    with pytest.raises(BackendUnavailableError, match="no kubeconfig at"):
        KubernetesBackend(tmp_path / "missing")
    (tmp_path / "broken").write_text("clusters: 3\n")
    with pytest.raises(BackendUnavailableError, match="cannot use the kubeconfig"):
        KubernetesBackend(tmp_path / "broken")


def test_node_address_sets_the_forward_url(
    server: KubeApiServer, tmp_path: Path, bundle: DeploymentBundle
) -> None:
    made = KubernetesBackend(server.kubeconfig(tmp_path / "kc"), node_address="10.0.0.7")
    port = free_port()
    assert made.apply(bundle, [port]).forward_url == f"http://10.0.0.7:{port}"
    made.close()
