"""A DeployBackend that keeps deployments in memory: the protocol, nothing more.

The platform's services are tested against it; the end-to-end test runs the
real ``local`` backend.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from modelseal.deploy.backends import (
    BackendError,
    DeploymentNotFoundError,
    DeploymentStatus,
)
from modelseal.deploy.bundle import DeploymentBundle


class FakeBackend:
    name = "local"

    def __init__(self, used: frozenset[int] = frozenset()) -> None:
        self._lock = threading.Lock()
        self.deployments: dict[tuple[str, str], tuple[DeploymentBundle, tuple[int, ...]]] = {}
        self.fail_next: str | None = None
        self.used = used
        self.closed = False
        self.calls: list[str] = []

    def _status(self, namespace: str, name: str) -> DeploymentStatus:
        bundle, ports = self.deployments[(namespace, name)]
        replicas = bundle.deployment.spec.replicas
        return DeploymentStatus(
            namespace=namespace,
            name=name,
            backend=self.name,
            phase="Running",
            replicas=replicas,
            ready_replicas=replicas,
            node_ports=ports,
            forward_url=f"http://127.0.0.1:{ports[0]}",
        )

    def apply(
        self, bundle: DeploymentBundle, node_ports: Sequence[int], *, dry_run: bool = False
    ) -> DeploymentStatus:
        self.calls.append("apply")
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise BackendError(message)
        assert len(node_ports) == bundle.deployment.spec.node_port_count
        meta = bundle.deployment.metadata
        with self._lock:
            self.deployments[(meta.namespace, meta.name)] = (bundle, tuple(node_ports))
            return self._status(meta.namespace, meta.name)

    def status(self, namespace: str, name: str) -> DeploymentStatus:
        with self._lock:
            if (namespace, name) not in self.deployments:
                raise DeploymentNotFoundError(namespace, name, self.name)
            return self._status(namespace, name)

    def logs(self, namespace: str, name: str, *, tail: int = 200) -> str:
        self.status(namespace, name)
        return f"serving {namespace}/{name}\n"

    def delete(self, namespace: str, name: str) -> bool:
        self.calls.append("delete")
        with self._lock:
            return self.deployments.pop((namespace, name), None) is not None

    def list(self) -> list[DeploymentStatus]:
        with self._lock:
            return [self._status(ns, n) for ns, n in self.deployments]

    def used_node_ports(self) -> frozenset[int]:
        return self.used

    def close(self) -> None:
        self.closed = True
