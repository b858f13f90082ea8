"""Licenses into clusters: the exported Secret and the mount snippet pass Kubernetes' strict
schemas, and ``modelseal serve`` takes the license path from ``MODELSEAL_LICENSE``."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from modelseal.crypto import ContentKey
from modelseal.errors import InvalidArgumentError
from modelseal.license.k8s_secret import MOUNT_DIR, mount_snippet, secret_manifest
from tests.controlplane.conftest import Server, catalog, fake_request, order, run_cli

VERSIONS = ("1.25", "1.31", "1.37")


def _pod(snippet: str) -> dict:  # type: ignore[type-arg]
    spec = yaml.safe_load(snippet)
    spec["containers"][0]["image"] = "registry.example/model:1"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m"}, "spec": spec}


def test_the_exported_secret_validates_strictly(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        ids = catalog(c, ContentKey.generate())
        made = order(c, ids)
        key = made["license_key"]
        act = c.post(
            "/v1/activate",
            json={"license_key": key, "request": fake_request(key, seed=7).to_json()},
        ).json()
    out = tmp_path / "secret.yaml"
    admin = ["admin", "--server", server.url, "--token-file", str(server.token_file)]
    proc = run_cli(
        *admin,
        "licenses",
        "download",
        "--device",
        act["device"],
        "--format",
        "k8s-secret",
        "--namespace",
        "inference",
        "--out",
        str(out),
    )
    secret = yaml.safe_load(out.read_text())
    for version in VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    assert secret["metadata"]["namespace"] == "inference"
    assert secret["metadata"]["labels"]["modelseal.dev/license"] == made["id"]
    assert base64.b64decode(secret["data"]["license.jwt"]).decode().strip() == act["license"]
    assert out.stat().st_mode & 0o777 == 0o600
    # the snippet printed with it mounts that Secret where MODELSEAL_LICENSE points
    snippet = proc.stdout[proc.stdout.index("# in the pod template") :]
    pod = _pod(snippet)
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
    env = pod["spec"]["containers"][0]["env"][0]
    assert env == {"name": "MODELSEAL_LICENSE", "value": f"{MOUNT_DIR}/license.jwt"}
    # a namespace that is no Kubernetes name is a usage error, and nothing is written
    bad = run_cli(
        *admin,
        "licenses",
        "download",
        "--device",
        act["device"],
        "--format",
        "k8s-secret",
        "--namespace",
        "Inference_1",
        "--out",
        str(tmp_path / "bad.yaml"),
        check=False,
    )
    assert bad.returncode == 2 and "not a Kubernetes name" in bad.stderr
    assert not (tmp_path / "bad.yaml").exists()
    missing = run_cli(
        *admin, "licenses", "download", "--device", act["device"], "--format", "k8s-secret",
        "--out", str(tmp_path / "x.yaml"), check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "--namespace" in missing.stderr


@pytest.mark.parametrize(
    "labels", [{}, {"app.kubernetes.io/part-of": 'ocr: "quoted" #not-a-comment'}]
)
def test_manifest_values_survive_yaml(labels: dict[str, str]) -> None:
    text = secret_manifest("a.b.c", name="lic-1", namespace="ns", labels=labels)
    obj = yaml.safe_load(text)
    assert obj["metadata"].get("labels", {}) == labels
    assert base64.b64decode(obj["data"]["license.jwt"]) == b"a.b.c\n"
    with pytest.raises(InvalidArgumentError):
        secret_manifest("a.b.c", name="Lic", namespace="ns", labels={})
    with pytest.raises(InvalidArgumentError):
        mount_snippet("x" * 254)


def test_serve_reads_the_license_path_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "m.mseal").write_bytes(b"not a model")
    (tmp_path / "vendor.pub").write_text("x")
    args = ["serve", str(tmp_path / "m.mseal"), "--trust", str(tmp_path / "vendor.pub")]
    without = run_cli(*args, check=False, env={"MODELSEAL_LICENSE": ""})
    assert without.returncode == 2 and "--license" in without.stderr
    with_env = run_cli(
        *args, check=False, env={"MODELSEAL_LICENSE": str(tmp_path / "mounted" / "license.jwt")}
    )
    # past option parsing: the command now fails on the files themselves, not on usage
    assert "Missing option" not in with_env.stderr
    assert with_env.returncode not in (0, 2), with_env.stderr
