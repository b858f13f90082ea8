"""A spec folder as a user has it: the spec, a real license and real keys next to it."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path

import pytest

from modelseal.crypto import generate_private_key
from modelseal.license.issue import issue_license

DEMO_SPEC = """\
apiVersion: modelseal/v1
kind: ModelDeployment
metadata: {name: demo-classifier, namespace: models}   # DNS-1123 names
spec:
  model: {name: demo, version: "1.0.0"}
  image: registry.example.com/acme/demo:1.0.0
  imagePullPolicy: IfNotPresent
  containerPort: 8080
  command: ["modelseal", "serve", "/models/demo.mseal"]
  env: {LOG_LEVEL: info}
  replicas: 2
  resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "2", memory: 4Gi}}
  volumes: [{name: models, hostPath: /srv/models, mountPath: /models, readOnly: true}]
  nodePorts: 1                          # how many NodePorts it needs; the allocator picks them
  license: {file: license.jwt}          # becomes a Secret, mounted read-only
  envelopeKey: {file: gateway-sm2.pub}  # the gateway's SM2 public key, becomes a ConfigMap
  route: {prefix: /demo}                # the gateway route the deployment creates
"""

FULL_SPEC = """\
apiVersion: modelseal/v1
kind: ModelDeployment
metadata:
  name: vision-2
  namespace: default
  labels: {team: vision, example.com/cost-centre: "42"}
spec:
  model: {name: resnet, version: "2.1"}
  image: localhost:5000/vision/resnet@sha256:0123456789abcdef0123456789abcdef
  imagePullPolicy: Always
  containerPort: 9000
  extraPorts: [{name: grpc, containerPort: 9001}, {name: metrics, containerPort: 9100}]
  command: [modelseal, serve, /models/resnet.mseal, --license, $(MODELSEAL_LICENSE)]
  args: ["--workers", "2"]
  env: {ZETA: "1", ALPHA: "yes", quoted: 'say "hi" & <bye>', MULTI: "a\\nb\\tc ünï ✓ 模型"}
  replicas: 0
  resources: {limits: {cpu: 1.5, memory: 512Mi, ephemeral-storage: 2G}}
  volumes:
    - {name: models, persistentVolumeClaim: model-store, mountPath: /models}
    - {name: scratch, hostPath: /var/tmp/scratch, mountPath: /scratch, readOnly: false}
  license: {file: license.jwt}
  trust: {file: vendor.pub}
"""


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """License and key texts, made once: issuing signs, key generation costs."""
    vendor = generate_private_key("ed25519")
    issued = issue_license(signing_key=vendor, issuer="acme", customer="example", audience=["demo"])
    gateway = generate_private_key("sm2")
    return {
        "license.jwt": issued.token + "\n",
        "gateway-sm2.pub": gateway.public_key().to_pem().decode("ascii"),
        "vendor.pub": vendor.public_key().to_pem().decode("ascii"),
    }


def write_spec_dir(root: Path, spec: str, inputs: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in inputs.items():
        (root / name).write_text(text)
    path = root / "deploy.yaml"
    path.write_text(spec)
    return path


@pytest.fixture
def demo_spec(tmp_path: Path, inputs: dict[str, str]) -> Path:
    return write_spec_dir(tmp_path / "demo", DEMO_SPEC, inputs)


@pytest.fixture
def full_spec(tmp_path: Path, inputs: dict[str, str]) -> Path:
    return write_spec_dir(tmp_path / "full", FULL_SPEC, inputs)


# --- what a failed local-backend test leaves for whoever reads the CI log -----------

#: Lines of each replica's log (and of the supervisor's) shown for a failed test.
LOG_TAIL = 40


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"    (unreadable: {exc})\n"
    return "".join(f"    {line}\n" for line in text.splitlines()[-lines:]) or "    (empty)\n"


def describe_local_deployments(root: Path) -> str:
    """Every local-backend deployment under ``root``: status, each replica, log tails.

    A flaky local-backend test once timed out in CI with two replicas alive
    and one of them never ready, and nothing left to say why: the test's
    teardown deletes the deployment and its logs. This is read from the
    state directories before teardown runs.
    """
    out: list[str] = []
    for plan in sorted(root.glob("**/local/*/*/plan.json")):
        state = plan.parent
        out.append(f"== local deployment {state.parent.name}/{state.name} ({state})\n")
        for name in ("supervisor.json", "status.json"):
            try:
                data = json.loads((state / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                out.append(f"  {name}: {exc}\n")
                continue
            replicas = data.pop("replicas", None) if isinstance(data, dict) else None
            out.append(f"  {name}: {json.dumps(data, sort_keys=True)}\n")
            for replica in replicas or []:
                out.append(f"    replica: {json.dumps(replica, sort_keys=True)}\n")
        for log in sorted((state / "logs").glob("replica-*.log*")):
            out.append(f"  -- {log.name} (last {LOG_TAIL} lines)\n{_tail(log, LOG_TAIL)}")
        if (state / "supervisor.log").exists():
            out.append(f"  -- supervisor.log\n{_tail(state / 'supervisor.log', LOG_TAIL)}")
    return "".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """On a failed test, append the state of its local deployments to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp_path, Path):
        text = describe_local_deployments(tmp_path)
        if text:
            report.sections.append(("local backend deployments at failure", text))
