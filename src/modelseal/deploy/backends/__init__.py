"""Where deployments run: one protocol, several backends.

``local`` runs supervised ``modelseal serve`` processes on this machine,
``kubernetes`` talks to a cluster's API server, ``podman`` runs OCI
containers. The control plane's platform area and ``modelseal deploy`` use
them only through :class:`DeployBackend`, so a deployment record, its
NodePorts and its gateway route work the same whichever backend runs it.

Backends are imported lazily by :func:`get_backend`: the kubernetes client
or podman are needed only by whoever asks for them.
"""

from __future__ import annotations

from modelseal.deploy.backends.base import (
    BACKENDS,
    BackendError,
    BackendUnavailableError,
    DeployBackend,
    DeploymentNotFoundError,
    DeploymentPhase,
    DeploymentStatus,
    get_backend,
    wait_ready,
)

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
