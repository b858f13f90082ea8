"""Kubernetes manifests for one deployment: Secret, ConfigMap, Service, Deployment.

Plain data in, plain data out (dicts ready for YAML or for a server-side
apply), no client library, no cluster. What the pod gets and why:

* the license as a Secret mounted read-only at ``/etc/modelseal/license``
  (the patent's and our sources' way of delivering licenses into pods);
* the gateway's SM2 envelope key (and the vendor's trust key, if given) as a
  ConfigMap at ``/etc/modelseal/keys``: public keys, not secrets;
* their paths in ``MODELSEAL_LICENSE``, ``MODELSEAL_ENVELOPE_KEY`` and
  ``MODELSEAL_TRUST``, so a command can say ``--license $(MODELSEAL_LICENSE)``
  (Kubernetes expands ``$(VAR)`` in command and args);
* readiness and liveness probes on ``/v2/health/ready`` and
  ``/v2/health/live`` (``modelseal serve``), and a startup probe that allows
  five minutes for decrypting and loading a large model;
* a checksum of the license and keys on the pod template, so renewing the
  license rolls the pods instead of waiting on the kubelet's resync;
* no service-account token and no privilege escalation: a model server has
  no business with the Kubernetes API.

The Helm chart (:mod:`modelseal.deploy.helm`) renders exactly these objects;
the tests hold the two to each other.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, Final

from modelseal.deploy import _yaml
from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.errors import NodePortUnavailableError

LICENSE_DIR: Final = "/etc/modelseal/license"
KEYS_DIR: Final = "/etc/modelseal/keys"
LICENSE_KEY: Final = "license.jwt"
ENVELOPE_KEY: Final = "envelope-key.pub"
LIVE_PATH: Final = "/v2/health/live"
READY_PATH: Final = "/v2/health/ready"
MANAGED_BY: Final = "modelseal"
CONTAINER_NAME: Final = "model"

#: Label and annotation keys the platform reads back (status, gateway, registry).
LABEL_MODEL: Final = "modelseal.io/model"
LABEL_MODEL_VERSION: Final = "modelseal.io/model-version"
ANNOTATION_ROUTE: Final = "modelseal.io/route-prefix"
ANNOTATION_INPUTS: Final = "modelseal.io/inputs-sha256"


def secret_name(name: str) -> str:
    return f"{name}-license"


def config_map_name(name: str) -> str:
    return f"{name}-keys"


def selector_labels(name: str) -> dict[str, str]:
    """Immutable in a Deployment, so it names the deployment only, never a version."""
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": MANAGED_BY}


def common_labels(bundle: DeploymentBundle) -> dict[str, str]:
    deployment = bundle.deployment
    model = deployment.spec.model
    return {
        **deployment.metadata.labels,
        "app.kubernetes.io/name": model.name,
        "app.kubernetes.io/instance": deployment.metadata.name,
        "app.kubernetes.io/version": model.version,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_MODEL: model.name,
        LABEL_MODEL_VERSION: model.version,
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inputs_digest(bundle: DeploymentBundle) -> str:
    """SHA-256 over the license and keys as mounted; changes when any of them does.

    Spelled so Helm's ``sha256sum`` computes the same value in the chart:
    the hex digest of the four parts' hex digests joined by newlines.
    """
    parts = (
        bundle.license,
        bundle.envelope_key or "",
        bundle.trust[0] if bundle.trust else "",
        bundle.trust[1] if bundle.trust else "",
    )
    return _sha256("\n".join(_sha256(p) for p in parts))


def _annotations(bundle: DeploymentBundle) -> dict[str, str]:
    route = bundle.deployment.spec.route
    return {ANNOTATION_ROUTE: route.prefix} if route is not None else {}


def _metadata(bundle: DeploymentBundle, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": bundle.deployment.metadata.namespace,
        "labels": common_labels(bundle),
    }
    annotations = _annotations(bundle)
    if annotations:
        meta["annotations"] = annotations
    return meta


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _port_names(bundle: DeploymentBundle) -> list[tuple[str, int, str]]:
    spec = bundle.deployment.spec
    return [("http", spec.container_port, "TCP")] + [
        (p.name, p.container_port, p.protocol) for p in spec.extra_ports
    ]


def render_secret(bundle: DeploymentBundle) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(bundle, secret_name(bundle.name)),
        "type": "Opaque",
        "data": {LICENSE_KEY: _b64(bundle.license)},
    }


def render_config_map(bundle: DeploymentBundle) -> dict[str, Any] | None:
    data: dict[str, str] = {}
    if bundle.envelope_key is not None:
        data[ENVELOPE_KEY] = bundle.envelope_key
    if bundle.trust is not None:
        data[bundle.trust[0]] = bundle.trust[1]
    if not data:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(bundle, config_map_name(bundle.name)),
        "data": data,
    }


def render_service(bundle: DeploymentBundle, node_ports: Sequence[int]) -> dict[str, Any]:
    ports = _port_names(bundle)
    if len(node_ports) != len(ports) or len(set(node_ports)) != len(node_ports):
        raise NodePortUnavailableError(
            f"the deployment exposes {len(ports)} port(s); got NodePorts {list(node_ports)}"
        )
    if any(not 1 <= p <= 65535 for p in node_ports):
        raise NodePortUnavailableError(f"NodePorts {list(node_ports)} are not all in 1-65535")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(bundle, bundle.name),
        "spec": {
            "type": "NodePort",
            "selector": selector_labels(bundle.name),
            "ports": [
                {
                    "name": name,
                    "protocol": protocol,
                    "port": port,
                    "targetPort": name,
                    "nodePort": node_port,
                }
                for (name, port, protocol), node_port in zip(ports, node_ports, strict=True)
            ],
        },
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _volume(volume: Any) -> dict[str, Any]:
    if volume.host_path is not None:
        return {"name": volume.name, "hostPath": {"path": volume.host_path}}
    return {
        "name": volume.name,
        "persistentVolumeClaim": {
            "claimName": volume.persistent_volume_claim,
            "readOnly": volume.read_only,
        },
    }


def render_deployment(bundle: DeploymentBundle) -> dict[str, Any]:
    spec = bundle.deployment.spec
    name = bundle.name
    env: list[dict[str, Any]] = [
        {"name": "MODELSEAL_LICENSE", "value": f"{LICENSE_DIR}/{LICENSE_KEY}"}
    ]
    if bundle.envelope_key is not None:
        env.append({"name": "MODELSEAL_ENVELOPE_KEY", "value": f"{KEYS_DIR}/{ENVELOPE_KEY}"})
    if bundle.trust is not None:
        env.append({"name": "MODELSEAL_TRUST", "value": f"{KEYS_DIR}/{bundle.trust[0]}"})
    # Sorted by name: Helm ranges over maps in key order, and the chart must agree.
    env += [{"name": k, "value": spec.env[k]} for k in sorted(spec.env)]

    mounts: list[dict[str, Any]] = [
        {"name": "modelseal-license", "mountPath": LICENSE_DIR, "readOnly": True}
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "modelseal-license",
            # 0444: the container's user is the image's choice (and often not
            # root); the pod is the boundary, and the directory is tmpfs.
            "secret": {"secretName": secret_name(name), "defaultMode": 0o444},
        }
    ]
    if bundle.envelope_key is not None or bundle.trust is not None:
        mounts.append({"name": "modelseal-keys", "mountPath": KEYS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "modelseal-keys",
                "configMap": {"name": config_map_name(name), "defaultMode": 0o444},
            }
        )
    for volume in spec.volumes:
        mounts.append(
            {"name": volume.name, "mountPath": volume.mount_path, "readOnly": volume.read_only}
        )
        volumes.append(_volume(volume))

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
    }
    # An empty list means the image's default, exactly like an absent one.
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    resources: dict[str, Any] = {}
    if spec.resources.requests is not None:
        resources["requests"] = spec.resources.requests.model_dump(exclude_none=True, by_alias=True)
    if spec.resources.limits is not None:
        resources["limits"] = spec.resources.limits.model_dump(exclude_none=True, by_alias=True)
    container |= {
        "env": env,
        "ports": [
            {"name": n, "containerPort": p, "protocol": proto}
            for n, p, proto in _port_names(bundle)
        ],
        "resources": resources,
        "volumeMounts": mounts,
        "startupProbe": _probe(LIVE_PATH, period=5, failures=60),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3),
        "readinessProbe": _probe(READY_PATH, period=5, failures=3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    template_meta: dict[str, Any] = {
        "labels": common_labels(bundle),
        "annotations": {**_annotations(bundle), ANNOTATION_INPUTS: inputs_digest(bundle)},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(bundle, name),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(name)},
            # Never fewer ready replicas than asked while a renewed license rolls out.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": template_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def render_manifests(bundle: DeploymentBundle, node_ports: Sequence[int]) -> list[dict[str, Any]]:
    """Every object of the deployment, in the order ``kubectl apply`` should create them."""
    manifests = [render_secret(bundle)]
    config_map = render_config_map(bundle)
    if config_map is not None:
        manifests.append(config_map)
    manifests += [render_service(bundle, node_ports), render_deployment(bundle)]
    return manifests


def manifests_to_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML, one ``---`` separated object each, as kubectl reads it."""
    return _yaml.dump_all(manifests)


__all__ = [
    "ANNOTATION_INPUTS",
    "ANNOTATION_ROUTE",
    "ENVELOPE_KEY",
    "KEYS_DIR",
    "LABEL_MODEL",
    "LABEL_MODEL_VERSION",
    "LICENSE_DIR",
    "LICENSE_KEY",
    "LIVE_PATH",
    "READY_PATH",
    "common_labels",
    "config_map_name",
    "inputs_digest",
    "manifests_to_yaml",
    "render_config_map",
    "render_deployment",
    "render_manifests",
    "render_secret",
    "render_service",
    "secret_name",
    "selector_labels",
]
