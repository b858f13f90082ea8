"""Rendered manifests: strictly valid for every Kubernetes version claimed; what the pod needs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelseal.deploy import (
    DeploySpecError,
    NodePortUnavailableError,
    load_bundle,
    manifests_to_yaml,
    render_manifests,
)
from modelseal.deploy.manifests import inputs_digest
from modelseal.deploy.validate import (
    SUPPORTED_KUBERNETES_VERSIONS,
    ManifestValidationError,
    validate_manifests,
)


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def test_we_claim_every_version_the_schemas_ship() -> None:
    shipped = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(SUPPORTED_KUBERNETES_VERSIONS) == shipped
    assert (
        SUPPORTED_KUBERNETES_VERSIONS[0] == "1.25" and SUPPORTED_KUBERNETES_VERSIONS[-1] == "1.37"
    )


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_manifests_validate_strictly_for_every_claimed_version(
    version: str, demo_spec: Path, full_spec: Path
) -> None:
    demo = render_manifests(load_bundle(demo_spec), [30080])
    full = render_manifests(load_bundle(full_spec), [30001, 30002, 30003])
    assert [m["kind"] for m in demo] == ["Secret", "ConfigMap", "Service", "Deployment"]
    validate_manifests([*demo, *full], versions=[version])
    # The YAML users pipe into kubectl is the same objects.
    text = manifests_to_yaml(demo)
    assert list(yaml.safe_load_all(text)) == demo
    assert list(yaml.safe_load_all(manifests_to_yaml(full))) == full  # unicode, \n, quotes


def test_validation_catches_a_broken_object() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"typo": 1}}
    with pytest.raises(ManifestValidationError, match=r"Service/x fails Kubernetes 1\.25"):
        validate_manifests([bad], versions=["1.25"])


def test_what_the_schemas_miss_our_spec_catches(demo_spec: Path) -> None:
    # kubernetes-validate accepts a Deployment with no image and a nodePort of
    # 99999; the spec parser and the renderer must refuse both.
    objects = by_kind(render_manifests(load_bundle(demo_spec), [30080]))
    deployment = objects["Deployment"]
    del deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    objects["Service"]["spec"]["ports"][0]["nodePort"] = 99999
    validate_manifests([deployment, objects["Service"]], versions=["1.37"])

    demo_spec.write_text(
        demo_spec.read_text().replace("  image: registry.example.com/acme/demo:1.0.0\n", "")
    )
    with pytest.raises(DeploySpecError, match=r"spec\.image: is required"):
        load_bundle(demo_spec)
    demo_spec.write_text(demo_spec.read_text() + "  image: registry.example.com/acme/demo:1.0.0\n")
    with pytest.raises(NodePortUnavailableError):
        render_manifests(load_bundle(demo_spec), [99999])


def test_the_pod_gets_license_keys_probes_and_labels(
    demo_spec: Path, inputs: dict[str, str]
) -> None:
    bundle = load_bundle(demo_spec)
    objects = by_kind(render_manifests(bundle, [30080]))
    secret, config, service, deployment = (
        objects[k] for k in ("Secret", "ConfigMap", "Service", "Deployment")
    )

    assert base64.b64decode(secret["data"]["license.jwt"]).decode() == inputs["license.jwt"]
    assert config["data"] == {"envelope-key.pub": inputs["gateway-sm2.pub"]}
    for obj in objects.values():
        assert obj["metadata"]["namespace"] == "models"
        labels = obj["metadata"]["labels"]
        assert labels["modelseal.io/model"] == "demo" and labels["app.kubernetes.io/name"] == "demo"
        assert (
            labels["modelseal.io/model-version"] == "1.0.0" == labels["app.kubernetes.io/version"]
        )
        assert obj["metadata"]["annotations"]["modelseal.io/route-prefix"] == "/demo"

    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080, "targetPort": "http", "nodePort": 30080}
    ]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert set(service["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
    assert deployment["spec"]["replicas"] == 2

    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/acme/demo:1.0.0"
    assert container["command"] == ["modelseal", "serve", "/models/demo.mseal"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "MODELSEAL_LICENSE": "/etc/modelseal/license/license.jwt",
        "MODELSEAL_ENVELOPE_KEY": "/etc/modelseal/keys/envelope-key.pub",
        "LOG_LEVEL": "info",
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["modelseal-license"] == {
        "name": "modelseal-license",
        "mountPath": "/etc/modelseal/license",
        "readOnly": True,
    }
    assert mounts["modelseal-keys"]["readOnly"] is True
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["modelseal-license"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes["modelseal-keys"]["configMap"]["name"] == config["metadata"]["name"]
    assert volumes["models"] == {"name": "models", "hostPath": {"path": "/srv/models"}}
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_a_renewed_license_rolls_the_pods(demo_spec: Path) -> None:
    before = load_bundle(demo_spec)
    license_file = demo_spec.parent / "license.jwt"
    license_file.write_text(license_file.read_text().strip())  # same token, different bytes
    after = load_bundle(demo_spec)
    key = "modelseal.io/inputs-sha256"
    old = by_kind(render_manifests(before, [30080]))["Deployment"]["spec"]["template"]["metadata"][
        "annotations"
    ][key]
    new = by_kind(render_manifests(after, [30080]))["Deployment"]["spec"]["template"]["metadata"][
        "annotations"
    ][key]
    assert old == inputs_digest(before) != new == inputs_digest(after)


def test_extra_ports_pvc_and_trust(full_spec: Path, inputs: dict[str, str]) -> None:
    objects = by_kind(render_manifests(load_bundle(full_spec), [30001, 30002, 30003]))
    assert [(p["name"], p["port"], p["nodePort"]) for p in objects["Service"]["spec"]["ports"]] == [
        ("http", 9000, 30001),
        ("grpc", 9001, 30002),
        ("metrics", 9100, 30003),
    ]
    assert objects["ConfigMap"]["data"] == {"trust.pub": inputs["vendor.pub"]}
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--workers", "2"]
    assert [e["name"] for e in container["env"]] == [
        "MODELSEAL_LICENSE",
        "MODELSEAL_TRUST",
        "ALPHA",
        "MULTI",
        "ZETA",
        "quoted",
    ]
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {
        "claimName": "model-store",
        "readOnly": True,
    }
    assert objects["Deployment"]["metadata"]["labels"]["team"] == "vision"
    with pytest.raises(NodePortUnavailableError, match="exposes 3 port"):
        render_manifests(load_bundle(full_spec), [30001])


def test_without_keys_there_is_no_config_map(tmp_path: Path, inputs: dict[str, str]) -> None:
    from tests.deploy.conftest import DEMO_SPEC, write_spec_dir

    spec = write_spec_dir(
        tmp_path, DEMO_SPEC.replace("  envelopeKey: {file: gateway-sm2.pub}", ""), inputs
    )
    manifests = render_manifests(load_bundle(spec), [30080])
    assert [m["kind"] for m in manifests] == ["Secret", "Service", "Deployment"]
    container = manifests[-1]["spec"]["template"]["spec"]["containers"][0]
    assert [m["name"] for m in container["volumeMounts"]] == ["modelseal-license", "models"]
    validate_manifests(manifests, versions=["1.25", "1.37"])


def test_yaml_output_survives_go_yaml_1_1_readers() -> None:
    # Go's YAML 1.1 (kubectl, Helm) reads these plain scalars as booleans or
    # numbers; PyYAML would leave some unquoted. Found by the Helm property test.
    from modelseal.deploy import _yaml

    tricky = ["y", "N", "on", "Off", "yes", "1:20", "0o17", "1_000", "0x1F", ".inf", "", "~", "1e3"]
    text = _yaml.dump({"values": tricky, "plain": "registry.example.com/acme/demo"})
    for value in tricky:
        assert f'"{value}"' in text
    assert "plain: registry.example.com/acme/demo" in text
    assert yaml.safe_load(text)["values"] == tricky
