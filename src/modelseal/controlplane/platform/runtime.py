"""What the Platform area keeps per server process: one deployment backend, the NodePort
range, the blob directory.

The backend is built on first use, not at start: a control plane that only
serves the registry must start even where the chosen backend cannot (no
kubeconfig, no podman), and says so on the first deploy instead. It is
closed when the server stops (the local backend stops its supervised
processes with it, as its documentation says).
"""

from __future__ import annotations

import threading
from pathlib import Path

from modelseal.controlplane.settings import Settings
from modelseal.deploy.backends import DeployBackend, get_backend
from modelseal.deploy.nodeports import NodePortRange


class PlatformRuntime:
    def __init__(self, settings: Settings, backend: DeployBackend | None = None) -> None:
        self.backend_name = backend.name if backend is not None else settings.deploy_backend
        self.port_range = NodePortRange.parse(settings.node_port_range)
        self.blobs: Path = settings.data_dir / "blobs"
        self.max_document_bytes = settings.max_document_bytes
        self._data_dir = settings.data_dir
        self._backend = backend
        self._lock = threading.Lock()

    def backend(self) -> DeployBackend:
        with self._lock:
            if self._backend is None:
                # the local backend keeps its state (and runs its supervisors as
                # threads of this process) under the control plane's data dir
                options = {"data_dir": self._data_dir} if self.backend_name == "local" else {}
                self._backend = get_backend(self.backend_name, **options)
            return self._backend

    def close(self) -> None:
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()


__all__ = ["PlatformRuntime"]
