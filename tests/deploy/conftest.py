"""A spec folder as a user has it: the spec, a real license and real keys next to it."""

from __future__ import annotations

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
