"""The Helm chart, rendered by Helm's own engine (helm-python-sdk, Helm's Go library, offline).

It must give exactly the objects the plain renderer gives, validate strictly
for every Kubernetes version we claim, and make Helm refuse overrides our
spec parser would refuse.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.deploy import load_bundle, render_manifests, write_helm_chart
from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.manifests import inputs_digest
from modelseal.deploy.nodeports import NodePortRange
from modelseal.deploy.spec import spec_from_data
from modelseal.deploy.validate import SUPPORTED_KUBERNETES_VERSIONS, validate_manifests
from modelseal.errors import OutputError, OutputExistsError
from tests.deploy.test_spec import valid_specs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def helm_render(
    chart_dir: Path, namespace: str, values: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    with helm.Chart.load(str(chart_dir)) as chart:
        rendered = chart.render(values, name="release", namespace=namespace)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    order = ["Secret", "ConfigMap", "Service", "Deployment"]
    return sorted(docs, key=lambda d: order.index(d["kind"]))


@pytest.mark.parametrize(
    ("which", "ports"), [("demo_spec", [30080]), ("full_spec", [30001, 30002, 30003])]
)
def test_helm_renders_exactly_our_manifests_and_they_validate(
    which: str, ports: list[int], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    bundle = load_bundle(request.getfixturevalue(which))
    chart = write_helm_chart(bundle, ports, tmp_path / "chart")
    rendered = helm_render(chart, bundle.deployment.metadata.namespace)
    assert rendered == render_manifests(bundle, ports)
    validate_manifests(rendered, versions=SUPPORTED_KUBERNETES_VERSIONS)


def test_chart_layout_values_and_lint(demo_spec: Path, tmp_path: Path) -> None:
    bundle = load_bundle(demo_spec)
    chart = write_helm_chart(bundle, [30080], tmp_path / "chart")
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == "demo-classifier"
    assert meta["version"] == "1.0.0" and meta["appVersion"] == "1.0.0"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    spec = bundle.deployment.to_data()["spec"]
    for key in (
        "model",
        "image",
        "imagePullPolicy",
        "containerPort",
        "command",
        "env",
        "replicas",
        "resources",
        "volumes",
        "route",
    ):
        assert values[key] == spec[key], key
    assert values["nodePorts"] == [30080]
    assert values["license"] == ""  # the license is a chart file, never a value
    assert bundle.license not in (chart / "values.yaml").read_text()
    assert (chart / "files" / "license.jwt").read_text() == bundle.license
    assert (chart / "files" / "license.jwt").stat().st_mode & 0o077 == 0
    assert {p.name for p in (chart / "templates").iterdir()} >= {
        "deployment.yaml",
        "service.yaml",
        "secret.yaml",
        "configmap.yaml",
        "_helpers.tpl",
    }
    result = helm.lint(str(chart))
    assert result["errors"] == []
    assert all(m["severity"] <= 1 for m in result["messages"]), result  # info only (icon)


def test_a_non_semver_model_version_still_makes_a_valid_chart(
    full_spec: Path, tmp_path: Path
) -> None:
    chart = write_helm_chart(load_bundle(full_spec), [30001, 30002, 30003], tmp_path / "c")
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["version"] == "0.1.0" and meta["appVersion"] == "2.1"
    assert helm.lint(str(chart))["errors"] == []


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_overrides_at_install_time(demo_spec: Path, tmp_path: Path, inputs: dict[str, str]) -> None:
    bundle = load_bundle(demo_spec)
    chart = write_helm_chart(bundle, [30080], tmp_path / "chart")
    renewed = inputs["license.jwt"].strip()  # what --set-file license=renewed.jwt passes
    docs = _by_kind(
        helm_render(chart, "models", {"license": renewed, "replicas": 5, "nodePorts": [31000]})
    )
    assert base64.b64decode(docs["Secret"]["data"]["license.jwt"]).decode() == renewed
    assert docs["Deployment"]["spec"]["replicas"] == 5
    assert docs["Service"]["spec"]["ports"][0]["nodePort"] == 31000
    # The pod template's checksum is the renderer's formula: Helm and Python agree.
    expected = inputs_digest(DeploymentBundle(bundle.deployment, renewed, bundle.envelope_key))
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["modelseal.io/inputs-sha256"] == expected != inputs_digest(bundle)
    validate_manifests(list(docs.values()), versions=["1.37"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nodePorts": [40000]}, "nodePorts"),
        ({"nodePorts": [30080, 30081]}, "nodePorts needs one port"),
        ({"image": ""}, "image"),
        ({"replicas": -1}, "replicas"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
    ],
)
def test_helm_refuses_bad_overrides(
    demo_spec: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    chart = write_helm_chart(
        load_bundle(demo_spec), [30080], tmp_path / "chart", NodePortRange(30000, 32767)
    )
    # render() is what ``helm install`` and ``helm template`` run: schema check included.
    with pytest.raises(helm.HelmError, match=message), helm.Chart.load(str(chart)) as loaded:
        loaded.render(values, name="release", namespace="models")


def test_a_chart_without_its_license_refuses_to_render(demo_spec: Path, tmp_path: Path) -> None:
    chart = write_helm_chart(load_bundle(demo_spec), [30080], tmp_path / "chart")
    (chart / "files" / "license.jwt").unlink()
    with (
        pytest.raises(helm.HelmError, match="a license is required"),
        helm.Chart.load(str(chart)) as loaded,
    ):
        loaded.render(name="release", namespace="models")


def test_output_folder_rules(demo_spec: Path, tmp_path: Path) -> None:
    bundle = load_bundle(demo_spec)
    out = tmp_path / "chart"
    write_helm_chart(bundle, [30080], out)
    with pytest.raises(OutputExistsError, match="not empty"):
        write_helm_chart(bundle, [30081], out)
    write_helm_chart(bundle, [30081], out, force=True)
    assert yaml.safe_load((out / "values.yaml").read_text())["nodePorts"] == [30081]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        write_helm_chart(bundle, [30080], tmp_path / "file")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_specs(), with_key=st.booleans())
def test_helm_and_the_renderer_agree_on_generated_specs(
    data: dict[str, Any], with_key: bool, inputs: dict[str, str]
) -> None:
    # Unicode, quotes, newlines, numbers-as-strings: Helm's toJson/toYaml and
    # PyYAML must end at the same objects, or the chart deploys something else.
    deployment = spec_from_data(data)
    bundle = DeploymentBundle(
        deployment, inputs["license.jwt"], inputs["gateway-sm2.pub"] if with_key else None
    )
    ports = list(range(30000, 30000 + deployment.spec.node_port_count))
    with tempfile.TemporaryDirectory() as tmp:
        chart = write_helm_chart(bundle, ports, Path(tmp) / "chart")
        assert helm_render(chart, deployment.metadata.namespace) == render_manifests(bundle, ports)


def test_force_replaces_only_a_chart_and_failures_leave_nothing(
    demo_spec: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(demo_spec)
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a Helm chart"):
        write_helm_chart(bundle, [30080], home, force=True)
    assert (home / "notes.txt").read_text() == "mine"

    with pytest.raises(OutputError, match="does not exist"):
        write_helm_chart(bundle, [30080], tmp_path / "absent" / "chart")

    out = tmp_path / "chart"
    write_helm_chart(bundle, [30080], out)
    (out / "templates" / "stale.yaml").write_text("kind: Stale")
    write_helm_chart(bundle, [30081], out, force=True)
    assert not (out / "templates" / "stale.yaml").exists()  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart", "demo", "home"]  # no leftovers
