"""The contract every deployment backend keeps.

A backend is told *what* to run (a :class:`DeploymentBundle`: the validated
spec and the text of the license and keys it names) and *on which NodePorts*
(already reserved by a :class:`~modelseal.deploy.nodeports.NodePortAllocator`
, so allocation stays one transactional step in whoever owns the records);
it never chooses ports itself. What it reports back is a
:class:`DeploymentStatus`, whose ``forward_url`` is what a gateway route
points at (a NodePort address, a local port, a published container port).

Deployments are named by ``(namespace, name)`` from the spec's metadata, as
in Kubernetes; ``apply`` of the same name again updates in place (a new
spec, license or image), it never creates a second copy.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.errors import DeployError

#: ``Pending``: created, not ready yet; ``Running``: every replica ready;
#: ``Degraded``: some ready, or restarting after a crash; ``Failed``: gave up
#: (crash loop past its back-off limit, image missing); ``Stopped``: exists
#: but is not running (stopped with its supervisor).
DeploymentPhase = Literal["Pending", "Running", "Degraded", "Failed", "Stopped"]


class BackendError(DeployError):
    """A backend could not do what was asked (exit code 30)."""


class BackendUnavailableError(BackendError):
    """The backend itself cannot be reached or is not installed here.

    No cluster at the kubeconfig's address, podman missing, the local
    backend's state directory unwritable: the message says which, and what
    to install or start.
    """


class DeploymentNotFoundError(BackendError):
    """No deployment of that namespace and name exists on this backend."""

    def __init__(self, namespace: str, name: str, backend: str) -> None:
        self.namespace = namespace
        self.name = name
        self.backend = backend
        super().__init__(f"no deployment {namespace}/{name} on the {backend} backend")


@dataclass(frozen=True)
class DeploymentStatus:
    """What a backend knows about one deployment, right now."""

    namespace: str
    name: str
    backend: str
    phase: DeploymentPhase
    replicas: int
    ready_replicas: int
    node_ports: tuple[int, ...] = ()
    #: Where a gateway route forwards to (``http://127.0.0.1:30001``); ``None``
    #: until the backend has an address (e.g. a Service not created yet).
    forward_url: str | None = None
    restarts: int = 0
    #: One line for people: why it is not Running, or empty.
    message: str = ""
    #: Backend-specific facts worth showing (pids, container ids, image digest).
    details: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and self.ready_replicas >= self.replicas

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["node_ports"] = list(self.node_ports)
        data["ready"] = self.ready
        return data


@runtime_checkable
class DeployBackend(Protocol):
    """Runs deployments somewhere. Every method may raise :class:`BackendError`."""

    #: ``local``, ``kubernetes``, ``podman``: what ``--backend`` names.
    name: str

    def apply(
        self, bundle: DeploymentBundle, node_ports: Sequence[int], *, dry_run: bool = False
    ) -> DeploymentStatus:
        """Create or update the deployment; return at once (see :func:`wait_ready`).

        ``node_ports`` has exactly ``bundle.deployment.spec.node_port_count``
        ports, reserved by the caller. ``dry_run`` checks everything it can
        (the backend is reachable, the image exists, the files are sound)
        and changes nothing.
        """
        ...

    def status(self, namespace: str, name: str) -> DeploymentStatus:
        """The deployment's current state; :class:`DeploymentNotFoundError` if none."""
        ...

    def logs(self, namespace: str, name: str, *, tail: int = 200) -> str:
        """The last ``tail`` lines of the deployment's output (all replicas)."""
        ...

    def delete(self, namespace: str, name: str) -> bool:
        """Stop and remove it, with everything it created; ``False`` if it did not exist."""
        ...

    def list(self) -> list[DeploymentStatus]:
        """Every deployment this backend runs for us (ours only: by label or state dir)."""
        ...

    def used_node_ports(self) -> frozenset[int]:
        """Ports taken on this backend by things we did not allocate.

        Kubernetes: every Service's nodePorts; local: every TCP port something
        on this machine listens on, except its own NodePorts (they are in the
        caller's records); podman: see its documentation. The allocator avoids
        them.
        """
        ...

    def close(self) -> None:
        """Release clients and threads; running deployments keep running unless
        the backend's own documentation says they stop with it (local)."""
        ...


#: ``--backend`` name -> ``"module:Class"``, imported on first use.
BACKENDS: Final[dict[str, str]] = {
    "local": "modelseal.deploy.backends.local:LocalBackend",
    "kubernetes": "modelseal.deploy.backends.kubernetes:KubernetesBackend",
    "podman": "modelseal.deploy.backends.podman:PodmanBackend",
}


def get_backend(name: str, **options: Any) -> DeployBackend:
    """Construct the backend called ``name`` with its own keyword options."""
    target = BACKENDS.get(name)
    if target is None:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(sorted(BACKENDS))}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"the {name} backend is not available here ({exc.name} is not installed)"
        ) from None
    factory: Callable[..., DeployBackend] = getattr(module, class_name)
    return factory(**options)


def wait_ready(
    backend: DeployBackend,
    namespace: str,
    name: str,
    *,
    timeout_s: float = 120.0,
    interval_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeploymentStatus:
    """Poll ``status`` until Running or Failed, or until ``timeout_s`` passes.

    Returns the last status either way; callers decide whether not-ready is
    an error (``deploy apply --wait`` makes it one).
    """
    deadline = clock() + timeout_s
    while True:
        current = backend.status(namespace, name)
        if current.ready or current.phase == "Failed" or clock() >= deadline:
            return current
        sleep(interval_s)


__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendUnavailableError",
    "DeployBackend",
    "DeploymentNotFoundError",
    "DeploymentPhase",
    "DeploymentStatus",
    "get_backend",
    "wait_ready",
]
