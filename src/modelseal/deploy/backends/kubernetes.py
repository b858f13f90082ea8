"""The ``kubernetes`` backend: server-side apply of the rendered manifests with the official client.

What it sends is exactly :func:`modelseal.deploy.manifests.render_manifests`
(Secret, ConfigMap, Service, Deployment), each as a **server-side apply**
(``PATCH`` with ``Content-Type: application/apply-patch+yaml``,
``fieldManager=modelseal``, ``force=true``): the API server merges our
fields and owns the rest, the same request creates or updates, and a field
someone changed by hand is taken back (``force``) rather than failing the
deploy. Every object carries ``app.kubernetes.io/managed-by: modelseal``;
that label is how :meth:`KubernetesBackend.list` finds ours and how
:meth:`KubernetesBackend.delete` refuses to touch an object that is not.

The namespace is created when missing (labelled as ours; never deleted by
us: other things may live in it). ``dry_run`` sends the same requests with
``dryRun=All``: the API server validates and admits them, nothing is stored.

Status comes from the Deployment's own status (observed generation,
updated/ready replicas, the ``Progressing`` and ``ReplicaFailure``
conditions) and its pods (restarts, waiting reasons such as
``ImagePullBackOff``), so "Running" means the rollout is complete, as
``kubectl rollout status`` means it. ``forward_url`` is
``http://NODE:NODEPORT`` where NODE is ``node_address`` or, by default, the
API server's host (right for single-node clusters; pass a node's address
otherwise).

Responses are read as JSON (``_preload_content=False``), not through the
client's generated models, so a field a newer API server adds never breaks
us. Needs the ``kubernetes`` extra (``pip install 'modelseal[kubernetes]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from modelseal.deploy.backends.base import (
    BackendError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    DeploymentPhase,
    DeploymentStatus,
)
from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.manifests import (
    CONTAINER_NAME,
    MANAGED_BY,
    config_map_name,
    render_manifests,
    secret_name,
    selector_labels,
)

try:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError as Urllib3Error
except ModuleNotFoundError as exc:  # pragma: no cover - only without the extra
    from modelseal.errors import MissingDependencyError

    raise MissingDependencyError(
        f"the kubernetes backend needs the kubernetes client ({exc.name} is missing): "
        "pip install 'modelseal[kubernetes]'"
    ) from None

FIELD_MANAGER: Final = "modelseal"
APPLY_PATCH: Final = "application/apply-patch+yaml"
MANAGED_SELECTOR: Final = f"app.kubernetes.io/managed-by={MANAGED_BY}"
#: Waiting reasons that no amount of waiting fixes: the image is not there.
_IMAGE_FAILURES: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CONFIG_FAILURES: Final = frozenset({"CreateContainerConfigError", "CreateContainerError"})


def _selector(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


class KubernetesBackend:
    """Deploys to a Kubernetes cluster through its API server (see the module doc)."""

    name = "kubernetes"

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        node_address: str | None = None,
        api_client: Any = None,
        request_timeout_s: float = 30.0,
    ) -> None:
        self._timeout = request_timeout_s
        self.api = api_client if api_client is not None else _load_client(kubeconfig, context)
        host = str(getattr(self.api.configuration, "host", "") or "")
        self.server = host
        self.node_address = node_address or urlsplit(host).hostname or "127.0.0.1"
        self.core = k8s_client.CoreV1Api(self.api)
        self.apps = k8s_client.AppsV1Api(self.api)

    # --- plumbing ----------------------------------------------------------------------

    def _call(
        self, method: Callable[..., Any], *args: Any, raw: bool = False, **kwargs: Any
    ) -> Any:
        """One API call; JSON back (text if ``raw``; ``None`` for 404); typed errors otherwise."""
        kwargs.setdefault("_request_timeout", self._timeout)
        try:
            response = method(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._api_error(exc) from None
        except (Urllib3Error, OSError) as exc:
            raise BackendUnavailableError(
                f"cannot reach the Kubernetes API server at {self.server}: {exc}"
            ) from None
        data = response.data
        if not data:
            return "" if raw else {}
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        if raw:
            return text
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _api_error(self, exc: Any) -> BackendError:
        message = ""
        try:
            body = json.loads(exc.body or "{}")
            message = str(body.get("message", ""))
        except (ValueError, AttributeError, TypeError):
            message = str(exc.body or "")[:300]
        status = exc.status
        if status == 401:
            return BackendError(
                f"the API server at {self.server} refused our credentials (401): "
                "check the kubeconfig's user or token"
            )
        if status == 403:
            return BackendError(
                f"not allowed by the cluster's RBAC (403): {message} "
                "(docs/deploy.md lists the permissions the backend needs)"
            )
        return BackendError(f"the API server answered {status}: {message or exc.reason}")

    # --- the protocol ----------------------------------------------------------------

    def apply(
        self, bundle: DeploymentBundle, node_ports: Sequence[int], *, dry_run: bool = False
    ) -> DeploymentStatus:
        namespace = bundle.deployment.metadata.namespace
        name = bundle.name
        manifests = render_manifests(bundle, node_ports)
        dry = "All" if dry_run else None
        created_namespace = self._ensure_namespace(namespace, dry)
        if dry_run and created_namespace:
            # Objects in a namespace that does not exist yet cannot be dry-run
            # by the server; the namespace's own dry-run was checked.
            return self._dry_status(bundle, node_ports, f"namespace {namespace} would be created")
        for manifest in manifests:
            self._apply_object(manifest, dry)
        if not any(m["kind"] == "ConfigMap" for m in manifests):
            # A spec that no longer names keys: the old ConfigMap goes.
            self._delete_if_ours(
                self.core.read_namespaced_config_map,
                self.core.delete_namespaced_config_map,
                config_map_name(name),
                namespace,
                dry,
            )
        if dry_run:
            return self._dry_status(
                bundle, node_ports, f"the API server accepted {len(manifests)} object(s) (dry run)"
            )
        return self.status(namespace, name)

    def _dry_status(
        self, bundle: DeploymentBundle, node_ports: Sequence[int], message: str
    ) -> DeploymentStatus:
        return DeploymentStatus(
            bundle.deployment.metadata.namespace,
            bundle.name,
            self.name,
            "Pending",
            bundle.deployment.spec.replicas,
            0,
            tuple(node_ports),
            self._forward_url(node_ports[0]) if node_ports else None,
            message=message,
        )

    def _ensure_namespace(self, namespace: str, dry: str | None) -> bool:
        if self._call(self.core.read_namespace, namespace) is not None:
            return False
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            },
        }
        try:
            self._call(self.core.create_namespace, body, dry_run=dry, field_manager=FIELD_MANAGER)
        except BackendError as exc:
            if "409" not in str(exc):  # created by someone else meanwhile: fine
                raise
        return True

    def _apply_object(self, manifest: dict[str, Any], dry: str | None) -> None:
        kind = manifest["kind"]
        meta = manifest["metadata"]
        methods = {
            "Secret": self.core.patch_namespaced_secret,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Service": self.core.patch_namespaced_service,
            "Deployment": self.apps.patch_namespaced_deployment,
        }
        result = self._call(
            methods[kind],
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            dry_run=dry,
            _content_type=APPLY_PATCH,
        )
        if result is None:
            raise BackendError(f"the API server has no {kind} endpoint in {meta['namespace']}")

    def status(self, namespace: str, name: str) -> DeploymentStatus:
        deployment = self._call(self.apps.read_namespaced_deployment, name, namespace)
        if not _ours(deployment):
            raise DeploymentNotFoundError(namespace, name, self.name)
        service = self._call(self.core.read_namespaced_service, name, namespace) or {}
        pods = self._pods(namespace, name)
        return self._status_of(deployment, service, pods)

    def _pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        listed = self._call(
            self.core.list_namespaced_pod, namespace, label_selector=_selector(name)
        )
        items = (listed or {}).get("items") or []
        return [p for p in items if isinstance(p, dict)]

    def _status_of(
        self, deployment: dict[str, Any], service: dict[str, Any], pods: list[dict[str, Any]]
    ) -> DeploymentStatus:
        meta = deployment.get("metadata") or {}
        spec = deployment.get("spec") or {}
        st = deployment.get("status") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        replicas = int(spec.get("replicas", 1))
        ready = int(st.get("readyReplicas") or 0)
        updated = int(st.get("updatedReplicas") or 0)
        total = int(st.get("replicas") or 0)
        observed = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        node_ports = tuple(
            int(p["nodePort"])
            for p in (service.get("spec") or {}).get("ports") or []
            if p.get("nodePort")
        )
        restarts = 0
        waiting: list[str] = []
        failed: list[str] = []
        for pod in pods:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                restarts += int(container.get("restartCount") or 0)
                state = (container.get("state") or {}).get("waiting") or {}
                reason = str(state.get("reason") or "")
                if not reason or reason == "ContainerCreating":
                    continue
                text = f"pod {pod['metadata']['name']}: {reason}"
                if state.get("message"):
                    text += f": {str(state['message']).splitlines()[0]}"
                last = (container.get("lastState") or {}).get("terminated") or {}
                if reason == "CrashLoopBackOff" and last.get("message"):
                    text += f" (last exit: {str(last['message']).strip().splitlines()[-1]})"
                (failed if reason in _IMAGE_FAILURES | _CONFIG_FAILURES else waiting).append(text)
        conditions = {c.get("type"): c for c in st.get("conditions") or [] if isinstance(c, dict)}
        progressing = conditions.get("Progressing") or {}
        replica_failure = conditions.get("ReplicaFailure") or {}
        phase: DeploymentPhase
        message = ""
        if replica_failure.get("status") == "True":
            phase, message = "Failed", str(replica_failure.get("message") or "ReplicaFailure")
        elif progressing.get("reason") == "ProgressDeadlineExceeded":
            phase = "Failed"
            message = str(progressing.get("message") or "rollout exceeded its progress deadline")
            if failed or waiting:
                message += "; " + (failed or waiting)[0]
        elif failed:
            phase, message = "Failed", failed[0]
        elif observed and ready >= replicas and updated >= replicas and total <= replicas:
            phase = "Running"
        else:
            phase = "Degraded" if ready > 0 or restarts > 0 else "Pending"
            message = (
                waiting[0]
                if waiting
                else f"rollout: {updated} of {replicas} updated, {ready} ready"
            )
        details = {"pods": ",".join(sorted(p["metadata"]["name"] for p in pods))}
        if meta.get("uid"):
            details["uid"] = str(meta["uid"])
        return DeploymentStatus(
            namespace=namespace,
            name=name,
            backend=self.name,
            phase=phase,
            replicas=replicas,
            ready_replicas=ready,
            node_ports=node_ports,
            forward_url=self._forward_url(node_ports[0]) if node_ports else None,
            restarts=restarts,
            message=message,
            details=details,
        )

    def logs(self, namespace: str, name: str, *, tail: int = 200) -> str:
        deployment = self._call(self.apps.read_namespaced_deployment, name, namespace)
        if not _ours(deployment):
            raise DeploymentNotFoundError(namespace, name, self.name)
        lines: list[tuple[str, str]] = []
        for pod in sorted(self._pods(namespace, name), key=lambda p: p["metadata"]["name"]):
            pod_name = pod["metadata"]["name"]
            try:
                text = self._call(
                    self.core.read_namespaced_pod_log,
                    pod_name,
                    namespace,
                    container=CONTAINER_NAME,
                    tail_lines=tail,
                    timestamps=True,
                    raw=True,
                )
            except BackendError as exc:  # a pod still starting has no log yet
                lines.append(("", f"[pod {pod_name}] (no log: {exc})"))
                continue
            if not isinstance(text, str):  # None: the pod went away meanwhile
                continue
            for line in text.splitlines():
                stamp, _, rest = line.partition(" ")
                lines.append((stamp, f"{stamp} [pod {pod_name}] {rest}"))
        lines.sort(key=lambda item: item[0])
        return "".join(entry + "\n" for _, entry in lines[-tail:] if tail > 0)

    def delete(self, namespace: str, name: str) -> bool:
        deleted = False
        for read, remove, object_name in (
            (
                self.apps.read_namespaced_deployment,
                self.apps.delete_namespaced_deployment,
                name,
            ),
            (self.core.read_namespaced_service, self.core.delete_namespaced_service, name),
            (
                self.core.read_namespaced_config_map,
                self.core.delete_namespaced_config_map,
                config_map_name(name),
            ),
            (
                self.core.read_namespaced_secret,
                self.core.delete_namespaced_secret,
                secret_name(name),
            ),
        ):
            deleted |= self._delete_if_ours(read, remove, object_name, namespace, None)
        return deleted

    def _delete_if_ours(
        self,
        read: Callable[..., Any],
        remove: Callable[..., Any],
        object_name: str,
        namespace: str,
        dry: str | None,
    ) -> bool:
        if not _ours(self._call(read, object_name, namespace)):
            return False
        result = self._call(
            remove, object_name, namespace, propagation_policy="Background", dry_run=dry
        )
        return result is not None

    def list(self) -> list[DeploymentStatus]:
        listed = self._call(
            self.apps.list_deployment_for_all_namespaces, label_selector=MANAGED_SELECTOR
        )
        found = []
        for deployment in (listed or {}).get("items") or []:
            meta = deployment.get("metadata") or {}
            namespace, name = meta.get("namespace", ""), meta.get("name", "")
            service = self._call(self.core.read_namespaced_service, name, namespace) or {}
            found.append(self._status_of(deployment, service, self._pods(namespace, name)))
        return sorted(found, key=lambda s: (s.namespace, s.name))

    def used_node_ports(self) -> frozenset[int]:
        """Every nodePort of every Service in the cluster, ours and everyone else's."""
        listed = self._call(self.core.list_service_for_all_namespaces)
        ports: set[int] = set()
        for service in (listed or {}).get("items") or []:
            for port in (service.get("spec") or {}).get("ports") or []:
                if port.get("nodePort"):
                    ports.add(int(port["nodePort"]))
        return frozenset(ports)

    def close(self) -> None:
        """Close the client's connection pool; deployments are the cluster's, they stay."""
        close = getattr(self.api, "close", None)
        if close is not None:
            close()

    def _forward_url(self, port: int) -> str:
        host = self.node_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _ours(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/managed-by") == MANAGED_BY)


def _load_client(kubeconfig: str | os.PathLike[str] | None, context: str | None) -> Any:
    """A client from the kubeconfig given, ``$KUBECONFIG``, ``~/.kube/config``, or in-cluster."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None and (Path.home() / ".kube" / "config").is_file():
        path = Path.home() / ".kube" / "config"
    try:
        if path is not None:
            if not Path(path).is_file():
                raise BackendUnavailableError(f"no kubeconfig at {path}")
            return k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=context
            )
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            return k8s_client.ApiClient(configuration)
    except (
        ConfigException,
        yaml.YAMLError,
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
    ) as exc:
        # The client's loader walks the YAML without checking its shape: a
        # malformed file surfaces as TypeError or KeyError from deep inside.
        raise BackendUnavailableError(
            f"cannot use the kubeconfig {path}: {type(exc).__name__}: {exc}"
        ) from None
    raise BackendUnavailableError(
        "no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, "
        "or create ~/.kube/config"
    )


__all__ = ["APPLY_PATCH", "FIELD_MANAGER", "KubernetesBackend"]
