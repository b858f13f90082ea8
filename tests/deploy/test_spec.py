"""The spec parser: strict, errors name their field path, only DeploySpecError escapes."""

from __future__ import annotations

import contextlib
import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.deploy import DeploySpecError, dump_spec, load_spec, parse_spec
from modelseal.deploy.spec import MAX_SPEC_BYTES, quantity_value, spec_from_data
from modelseal.errors import FormatError
from tests.deploy.conftest import DEMO_SPEC, FULL_SPEC


def demo_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO_SPEC)
    return data


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(DeploySpecError) as info:
        spec_from_data(data)
    return info.value.problems


def test_the_issue_example_parses_with_every_field() -> None:
    d = parse_spec(DEMO_SPEC)
    assert d.metadata.name == "demo-classifier"
    assert d.metadata.namespace == "models"
    s = d.spec
    assert (s.model.name, s.model.version) == ("demo", "1.0.0")
    assert s.image == "registry.example.com/acme/demo:1.0.0"
    assert s.replicas == 2
    assert s.command == ["modelseal", "serve", "/models/demo.mseal"]
    assert s.resources.requests is not None and s.resources.requests.cpu == "500m"
    assert s.resources.limits is not None and s.resources.limits.memory == "4Gi"
    assert s.volumes[0].host_path == "/srv/models" and s.volumes[0].read_only
    assert s.node_ports == 1 and s.node_port_count == 1
    assert s.license.file == "license.jwt"
    assert s.envelope_key is not None and s.envelope_key.file == "gateway-sm2.pub"
    assert s.route is not None and s.route.prefix == "/demo"


def test_defaults_and_numbers_spelled_as_kubernetes_stores_them() -> None:
    d = parse_spec(FULL_SPEC)
    assert d.spec.resources.limits is not None
    assert d.spec.resources.limits.cpu == "1.5"  # a YAML float, kept as a quantity string
    assert d.spec.node_port_count == 3
    assert d.spec.volumes[0].read_only is True  # read-only unless said otherwise
    assert (
        parse_spec(
            DEMO_SPEC.replace("  imagePullPolicy: IfNotPresent\n", "")
        ).spec.image_pull_policy
        == "IfNotPresent"
    )


@pytest.mark.parametrize("text", [DEMO_SPEC, FULL_SPEC])
def test_dump_parses_back_to_the_same_spec(text: str) -> None:
    d = parse_spec(text)
    assert parse_spec(dump_spec(d)) == d


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()

BAD = [
    ("spec.replicas", "2", "spec.replicas", "must be an integer"),
    ("spec.replicas", True, "spec.replicas", "must be an integer"),
    ("spec.replicas", -1, "spec.replicas", "must be at least 0"),
    ("spec.image", "", "spec.image", "must name a container image"),
    ("spec.image", _DELETE, "spec.image", "is required"),
    ("spec.image", "Registry/UPPER:1", "spec.image", "is not a container image reference"),
    ("spec.image", "demo:bad tag", "spec.image", "is not a container image reference"),
    ("spec.containerPort", 70000, "spec.containerPort", "must be at most 65535"),
    (
        "spec.imagePullPolicy",
        "Sometimes",
        "spec.imagePullPolicy",
        "must be 'Always', 'IfNotPresent' or 'Never'",
    ),
    ("spec.env.LOG_LEVEL", 3, "spec.env.LOG_LEVEL", "must be a string (quote it in YAML"),
    ("spec.env", {"MODELSEAL_LICENSE": "x"}, "spec.env.MODELSEAL_LICENSE", "set by modelseal"),
    ("spec.env", {"1=bad": "x"}, "spec.env.1=bad", "not a valid environment variable name"),
    ("spec.model.version", 1.0, "spec.model.version", "must be a string"),
    ("spec.model.name", "has space", "spec.model.name", "must be a valid label value"),
    ("metadata.name", "Demo", "metadata.name", "DNS-1123 label that starts with a letter"),
    ("metadata.name", "9lives", "metadata.name", "starts with a letter"),
    ("metadata.name", "a" * 64, "metadata.name", "at most 63 characters"),
    ("metadata.namespace", "models_", "metadata.namespace", "must be a DNS-1123 label"),
    (
        "metadata.labels",
        {"app.kubernetes.io/name": "x"},
        "metadata.labels.app.kubernetes.io/name",
        "set by modelseal",
    ),
    ("metadata.labels", {"team": "bad value!"}, "metadata.labels.team", "valid label value"),
    ("metadata.colour", "blue", "metadata.colour", "unknown field"),
    ("spec.replica", 3, "spec.replica", "unknown field"),
    ("apiVersion", "modelseal/v2", "apiVersion", "this release reads modelseal/v1"),
    ("kind", "Deployment", "kind", "must be 'ModelDeployment'"),
    (
        "spec.resources.requests.cpu",
        "5 cores",
        "spec.resources.requests.cpu",
        "not a Kubernetes quantity",
    ),
    (
        "spec.resources.requests.memory",
        "-1Gi",
        "spec.resources.requests.memory",
        "not a Kubernetes quantity",
    ),
    ("spec.resources.requests.gpu", "1", "spec.resources.requests.gpu", "unknown field"),
    (
        "spec.resources.limits.cpu",
        "100m",
        "spec.resources",
        "requests.cpu (500m) must not exceed limits.cpu (100m)",
    ),
    (
        "spec.volumes.0.hostPath",
        "srv/models",
        "spec.volumes[0].hostPath",
        "must be an absolute path",
    ),
    ("spec.volumes.0.mountPath", "/models/../etc", "spec.volumes[0].mountPath", "'..'"),
    ("spec.volumes.0.mountPath", "/etc/modelseal/x", "spec.volumes[0]", "/etc/modelseal"),
    ("spec.volumes.0.mountPath", "/", "spec.volumes[0]", "would cover the root"),
    (
        "spec.volumes.0.persistentVolumeClaim",
        "claim",
        "spec.volumes[0]",
        "exactly one of hostPath or persistentVolumeClaim",
    ),
    ("spec.volumes.0.name", "modelseal-license", "spec.volumes[0]", "reserved"),
    ("spec.volumes.0.readOnly", "yes", "spec.volumes[0].readOnly", "must be true or false"),
    ("spec.nodePorts", 2, "spec", "nodePorts: is 2 but the deployment exposes 1 port(s)"),
    ("spec.nodePorts", 0, "spec.nodePorts", "must be at least 1"),
    ("spec.license", _DELETE, "spec.license", "is required"),
    ("spec.license", "license.jwt", "spec.license", "must be a mapping"),
    ("spec.license.file", "", "spec.license.file", "must name a file"),
    ("spec.route.prefix", "demo", "spec.route.prefix", "must be a path prefix"),
    ("spec.route.prefix", "/demo/", "spec.route.prefix", "must be a path prefix"),
    ("spec.route.prefix", "/a/../b", "spec.route.prefix", "must be a path prefix"),
    ("spec.command", "modelseal serve", "spec.command", "must be a list"),
    ("spec.command", [""], "spec.command[0]", "must not be empty"),
    # NEL and U+2028 are line breaks to YAML 1.1: the value would change on the way.
    ("spec.command", ["a\x85b"], "spec.command[0]", "control character U+0085"),
    ("spec.env.LOG_LEVEL", "a\u2028b", "spec.env.LOG_LEVEL", "control character U+2028"),
    ("spec.license.file", "a\x00b", "spec.license.file", "control character U+0000"),
    (
        "spec.extraPorts",
        [{"name": "http", "containerPort": 9}],
        "spec",
        "port names must be unique",
    ),
    (
        "spec.extraPorts",
        [{"name": "grpc", "containerPort": 8080}],
        "spec",
        "port 8080 is exposed twice",
    ),
    (
        "spec.extraPorts",
        [{"name": "9001", "containerPort": 9001}],
        "spec.extraPorts[0].name",
        "at least one letter",
    ),
    (
        "spec.extraPorts",
        [{"name": "a--b", "containerPort": 9001}],
        "spec.extraPorts[0].name",
        "port name",
    ),
    (
        "spec.extraPorts",
        [{"name": "x" * 16, "containerPort": 9001}],
        "spec.extraPorts[0].name",
        "port name",
    ),
    (
        "spec.extraPorts",
        [{"name": "grpc", "containerPort": 9001, "protocol": "tcp"}],
        "spec.extraPorts[0].protocol",
        "must be 'TCP', 'UDP' or 'SCTP'",
    ),
]


@pytest.mark.parametrize(
    ("where", "value", "path", "message"),
    BAD,
    ids=[f"{b[0]}={'<deleted>' if b[1] is _DELETE else repr(b[1])}"[:60] for b in BAD],
)
def test_each_mistake_names_its_field(where: str, value: Any, path: str, message: str) -> None:
    found = problems(_set(demo_data(), where, value))
    assert any(p == path and message in m for p, m in found), found


def test_every_problem_is_reported_at_once_and_str_leads_with_the_path() -> None:
    data = _set(_set(demo_data(), "spec.replicas", "2"), "spec.image", "")
    with pytest.raises(DeploySpecError) as info:
        spec_from_data(data, source="deploy.yaml")
    assert {p for p, _ in info.value.problems} == {"spec.replicas", "spec.image"}
    text = str(info.value)
    assert text.startswith("deploy.yaml: 2 problems: ")
    assert "spec.replicas: must be an integer" in text
    one = _set(demo_data(), "spec.replicas", "2")
    with pytest.raises(DeploySpecError, match=r"^spec\.replicas: must be an integer$"):
        spec_from_data(one)


def test_spec_errors_are_format_errors_with_exit_code_3() -> None:
    assert issubclass(DeploySpecError, FormatError)
    assert DeploySpecError([("a", "b")]).exit_code == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec: [unclosed", "not valid YAML: line 1"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        (DEMO_SPEC + "---\n" + DEMO_SPEC, "expected one YAML document, found 2"),
        ("", "expected one YAML document, found 0"),
        ("- just\n- a list\n", "a deployment spec is a YAML mapping"),
        ("!!python/object:os.system {}", "not valid YAML"),
        ("{? [a, b] : 1}", "a mapping key must be a plain value"),
        ("\tkind: x", "not valid YAML"),
    ],
)
def test_bad_yaml_is_a_spec_error(text: str, message: str) -> None:
    with pytest.raises(DeploySpecError, match=message.replace("[", r"\[")):
        parse_spec(text)


def test_duplicate_keys_deep_in_the_spec_are_refused() -> None:
    text = DEMO_SPEC.replace("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n")
    with pytest.raises(DeploySpecError, match="duplicate key 'replicas'"):
        parse_spec(text)


def test_size_and_encoding_limits(tmp_path: Path) -> None:
    with pytest.raises(DeploySpecError, match="not UTF-8"):
        parse_spec(b"kind: \xff\xfe")
    with pytest.raises(DeploySpecError, match="larger than"):
        parse_spec("#" * (MAX_SPEC_BYTES + 1))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_SPEC_BYTES + 10))
    with pytest.raises(DeploySpecError, match="larger than"):
        load_spec(big)
    with pytest.raises(DeploySpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(DeploySpecError, match="is a directory"):
        load_spec(tmp_path)


def test_alias_bomb_is_refused_or_bounded() -> None:
    # 9 * 4**12 strings if expanded; PyYAML shares them, the schema never walks them.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(12):
        this, prev = chr(98 + i), chr(97 + i)
        lines.append(f"{this}: &{this} [*{prev}, *{prev}, *{prev}, *{prev}]")
    bomb = "\n".join(lines) + "\n"
    with pytest.raises(DeploySpecError):
        parse_spec(bomb)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1.5", Decimal("1.5")),
        ("1e3", Decimal(1000)),
        ("128974848", Decimal(128974848)),
        ("2Ei", Decimal(2 * 2**60)),
    ],
)
def test_quantity_values(text: str, value: Decimal) -> None:
    assert quantity_value(text) == value


# --- property tests -------------------------------------------------------------------

_label = st.from_regex(r"\A[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,5})?\Z")
_label_value = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?\Z")
_quantity = st.one_of(
    st.integers(0, 10**6).map(str),
    st.builds(
        lambda n, s: f"{n}{s}",
        st.integers(1, 4096),
        st.sampled_from(["m", "Mi", "Gi", "k", "M", "G", "Ki"]),
    ),
)
# What a spec may carry in free text: anything but the control characters it refuses.
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029")
    | st.sampled_from("\t\n"),
    max_size=20,
)
_path = st.lists(st.from_regex(r"\A[a-z0-9_]{1,8}\Z"), min_size=1, max_size=3).map(
    lambda p: "/" + "/".join(p)
)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    extra_names = draw(
        st.lists(st.sampled_from(["grpc", "metrics", "admin"]), unique=True, max_size=3)
    )
    ports = draw(
        st.lists(
            st.integers(1, 65535),
            min_size=1 + len(extra_names),
            max_size=1 + len(extra_names),
            unique=True,
        )
    )
    volume_names = draw(st.lists(_label, unique=True, max_size=3))
    mounts = draw(
        st.lists(
            _path.filter(lambda p: not p.startswith("/etc")),
            min_size=len(volume_names),
            max_size=len(volume_names),
            unique=True,
        )
    )
    volumes = []
    for name, mount in zip(volume_names, mounts, strict=True):
        if name.startswith("modelseal-"):
            continue
        volume: dict[str, Any] = {"name": name, "mountPath": mount, "readOnly": draw(st.booleans())}
        if draw(st.booleans()):
            volume["hostPath"] = draw(_path)
        else:
            volume["persistentVolumeClaim"] = draw(_label)
        volumes.append(volume)
    spec: dict[str, Any] = {
        "model": {"name": draw(_label_value), "version": draw(_label_value)},
        "image": draw(
            st.from_regex(
                r"\A([a-z0-9]{1,8}\.[a-z]{2,4}(:[0-9]{2,5})?/)?[a-z0-9]{1,8}(/[a-z0-9]{1,8})?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,8})?\Z"
            )
        ),
        "imagePullPolicy": draw(st.sampled_from(["Always", "IfNotPresent", "Never"])),
        "containerPort": ports[0],
        "extraPorts": [
            {"name": n, "containerPort": p, "protocol": "TCP"}
            for n, p in zip(extra_names, ports[1:], strict=True)
        ],
        "env": draw(
            st.dictionaries(
                st.from_regex(r"\A[A-Z][A-Z0-9_]{0,8}\Z").filter(
                    lambda n: not n.startswith("MODELSEAL_")
                ),
                _text,
                max_size=4,
            )
        ),
        "replicas": draw(st.integers(0, 1000)),
        "resources": {"requests": {"cpu": draw(_quantity)}} if draw(st.booleans()) else {},
        "volumes": volumes,
        "license": {"file": draw(st.from_regex(r"\A[a-z]{1,8}\.jwt\Z"))},
    }
    if draw(st.booleans()):
        spec["command"] = draw(st.lists(_text.filter(bool), min_size=1, max_size=4))
    if draw(st.booleans()):
        spec["nodePorts"] = len(ports)
    if draw(st.booleans()):
        spec["route"] = {"prefix": draw(_path)}
    return {
        "apiVersion": "modelseal/v1",
        "kind": "ModelDeployment",
        "metadata": {"name": draw(_label), "namespace": draw(_label)},
        "spec": spec,
    }


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_valid_specs_parse_and_round_trip_through_yaml(data: dict[str, Any]) -> None:
    d = parse_spec(yaml.safe_dump(data))
    assert d.metadata.name == data["metadata"]["name"]
    assert d.spec.replicas == data["spec"]["replicas"]
    assert d.spec.env == data["spec"]["env"]
    assert parse_spec(dump_spec(d)) == d


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@settings(max_examples=150, deadline=None)
@given(st.data(), _json)
def test_any_corruption_of_a_valid_spec_gives_a_spec_error_or_a_valid_spec(
    data: st.DataObject, value: Any
) -> None:
    spec = demo_data()
    path = data.draw(st.sampled_from(_paths(spec)))
    node: Any = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        d = spec_from_data(spec)
    except DeploySpecError as exc:
        found = exc.problems
    else:
        assert parse_spec(dump_spec(d)) == d
        return
    assert found and all(isinstance(p, str) and m for p, m in found)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=400))
def test_arbitrary_input_never_escapes_as_anything_but_a_spec_error(text: str | bytes) -> None:
    with contextlib.suppress(DeploySpecError):
        parse_spec(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(DEMO_SPEC.splitlines()), st.text(max_size=40))
def test_edited_lines_of_the_example_never_escape(line: str, replacement: str) -> None:
    with contextlib.suppress(DeploySpecError):
        parse_spec(DEMO_SPEC.replace(line, replacement, 1))


def test_the_example_in_docs_deploy_md_is_a_valid_spec() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    d = parse_spec(block)
    assert d.metadata.name == "demo-classifier" and d.spec.trust is not None
