"""Deployment of sealed models: the spec, Kubernetes manifests, Helm charts, NodePorts.

A library: the control plane and the CLI use it, it uses neither, and it
imports no web framework, database or Kubernetes client. It needs the
``deploy`` extra (``pip install 'modelseal[deploy]'``); ``import modelseal``
does not import it. See docs/deploy.md.
"""

from __future__ import annotations

import importlib.util as _importlib_util

if _importlib_util.find_spec("yaml") is None:  # pragma: no cover - only without the extra
    from modelseal.errors import MissingDependencyError

    raise MissingDependencyError("modelseal.deploy needs PyYAML: pip install 'modelseal[deploy]'")

from modelseal.deploy.bundle import DeploymentBundle, bundle_from, load_bundle
from modelseal.deploy.errors import (
    DeployError,
    DeploySpecError,
    NodePortError,
    NodePortRangeError,
    NodePortReservationError,
    NodePortsExhaustedError,
    NodePortUnavailableError,
)
from modelseal.deploy.helm import chart_files, write_helm_chart
from modelseal.deploy.manifests import manifests_to_yaml, render_manifests
from modelseal.deploy.nodeports import (
    InMemoryNodePortStore,
    NodePortAllocator,
    NodePortRange,
    NodePortStore,
    check_node_ports,
    recommend_node_ports,
)
from modelseal.deploy.spec import ModelDeployment, dump_spec, load_spec, parse_spec

__all__ = [
    "DeployError",
    "DeploySpecError",
    "DeploymentBundle",
    "InMemoryNodePortStore",
    "ModelDeployment",
    "NodePortAllocator",
    "NodePortError",
    "NodePortRange",
    "NodePortRangeError",
    "NodePortReservationError",
    "NodePortStore",
    "NodePortUnavailableError",
    "NodePortsExhaustedError",
    "bundle_from",
    "chart_files",
    "check_node_ports",
    "dump_spec",
    "load_bundle",
    "load_spec",
    "manifests_to_yaml",
    "parse_spec",
    "recommend_node_ports",
    "render_manifests",
    "write_helm_chart",
]
