"""The platform API in process with two tenants and a fake deployment backend."""

from __future__ import annotations

import pytest

from modelseal.crypto import generate_private_key
from modelseal.license.issue import issue_license
from tests.controlplane.conftest import Api
from tests.controlplane.platform.fakes import FakeBackend

SPEC = """\
apiVersion: modelseal/v1
kind: ModelDeployment
metadata: {name: demo-classifier, namespace: models}
spec:
  model: {name: demo, version: "1.0.0"}
  image: registry.example.com/acme/demo:1.0.0
  containerPort: 8080
  replicas: 1
  nodePorts: 1
  license: {file: license.jwt}
  envelopeKey: {file: gateway-sm2.pub}
  route: {prefix: /demo}
"""


@pytest.fixture(scope="session")
def license_text() -> str:
    vendor = generate_private_key("ed25519")
    return issue_license(
        signing_key=vendor, issuer="acme", customer="example", audience=["demo"]
    ).token


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def papi(api: Api, backend: FakeBackend) -> Api:
    """``api`` with the platform's backend replaced by the fake and a small port range."""
    from modelseal.controlplane.platform.runtime import PlatformRuntime

    settings = api.settings.model_copy(update={"node_port_range": "30000-30009"})
    api.client.app.state.platform = PlatformRuntime(settings, backend=backend)  # type: ignore[attr-defined]
    return api
