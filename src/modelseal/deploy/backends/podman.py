"""The ``podman`` backend: each deployment is one OCI container on this machine.

``apply`` runs the spec's image (never pulled: ``--pull never``; build it
with ``modelseal image build`` or ``podman load`` it) with

- the license bind-mounted **read-only** at ``/etc/modelseal/license/license.jwt``
  and the gateway's SM2 public key (and the vendor's key, when the spec
  names one) under ``/etc/modelseal/keys``: the paths, and the
  ``MODELSEAL_*`` variables naming them, of the Kubernetes manifests, so
  one image runs the same under both. The files live in a root-only
  folder of this backend's state directory; the image never holds them;
- the container port, and each extra port, published on ``127.0.0.1`` at
  the NodePorts the allocator chose (``forward_url`` points the gateway
  route at the first);
- ``--memory``/``--memory-reservation``/``--cpus`` from the spec's
  resources, a restart policy (``on-failure:5`` by default), no
  capabilities, ``no-new-privileges``;
- a **stable hostname derived from a secret of this backend** (HMAC of
  the deployment's name under a key in the state directory). A container
  sees few device components (the CPU model and its hostname: no disk, no
  NIC, no DMI for a non-root user; docs/deploy.md "Device binding in a
  container"), so the license is bound to what the container sees, made
  with :meth:`PodmanBackend.device_request`; the derived hostname is what
  makes that binding survive re-creating the container here while staying
  unknown to whoever copies the image and license elsewhere.

Readiness is ``GET /v2/health/ready`` on the published port, asked by
``status`` itself: podman's own health checks need systemd timers, which
these machines do not run. Deployments are found again by label
(``modelseal.io/managed-by=modelseal``), so ``status``/``list``/``delete``
work from any process, and a container survives the process that applied
it (as with Kubernetes, unlike the ``local`` backend).

One replica per deployment: a NodePort on one host can be published by
one container only. ``replicas: 0`` keeps a created, stopped container.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from modelseal._fs import write_file
from modelseal.deploy.backends.base import (
    BackendError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    DeploymentPhase,
    DeploymentStatus,
)
from modelseal.deploy.backends.local import default_data_dir
from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.manifests import (
    ANNOTATION_ROUTE,
    ENVELOPE_KEY,
    KEYS_DIR,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LICENSE_DIR,
    LICENSE_KEY,
    READY_PATH,
    inputs_digest,
)
from modelseal.deploy.spec import quantity_value
from modelseal.errors import ModelsealError
from modelseal.image.errors import ImageError, PodmanNotInstalledError
from modelseal.image.podman import Podman

LABEL_MANAGED: Final = "modelseal.io/managed-by"
LABEL_DEPLOYMENT: Final = "modelseal.io/deployment"
LABEL_NAMESPACE: Final = "modelseal.io/namespace"
LABEL_NAME: Final = "modelseal.io/name"
LABEL_NODE_PORTS: Final = "modelseal.io/node-ports"
LABEL_SPEC: Final = "modelseal.io/spec-sha256"
LABEL_INPUTS: Final = "modelseal.io/inputs-sha256"
LABEL_REPLICAS: Final = "modelseal.io/replicas"
LABEL_RESTARTS: Final = "modelseal.io/max-restarts"
#: Where the guard keeps its state in images built by modelseal (kept across re-creation).
GUARD_STATE_DIR: Final = "/var/lib/modelseal"
PROBE_TIMEOUT_S: Final = 1.0


#: Probes go straight to the published port: an ``http_proxy`` in the
#: environment must not answer (or fail) for the container.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_backend_dir() -> Path:
    """What ``modelseal deploy --backend podman`` uses: ``$MODELSEAL_DEPLOY_DIR/podman``,
    else ``~/.local/share/modelseal/deploy/podman``. It holds the hostname key:
    a license made with :meth:`PodmanBackend.device_request` opens only in
    containers run with the same state directory."""
    env = os.environ.get("MODELSEAL_DEPLOY_DIR")
    return (Path(env) if env else default_data_dir()) / "podman"


def _container_name(namespace: str, name: str) -> str:
    return f"modelseal-{namespace}-{name}"


def _label_filter(namespace: str | None = None, name: str | None = None) -> list[str]:
    args = ["--filter", f"label={LABEL_MANAGED}=modelseal"]
    if namespace is not None and name is not None:
        args += ["--filter", f"label={LABEL_DEPLOYMENT}={namespace}.{name}"]
    return args


def _cpus(value: str) -> str:
    return format(quantity_value(value).normalize(), "f")


def _bytes(value: str) -> str:
    return str(int(quantity_value(value).to_integral_value(rounding="ROUND_CEILING")))


def listening_ports(proc_net: str | os.PathLike[str] = "/proc/net") -> set[int]:
    """TCP ports in LISTEN and bound UDP ports on this host, from ``/proc/net``."""
    ports: set[int] = set()
    for table, wanted in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = (Path(proc_net) / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == wanted:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class PodmanBackend:
    """Deployments as podman containers on this machine (docs/deploy.md, "The podman backend")."""

    name = "podman"

    def __init__(
        self,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        podman: Podman | None = None,
        publish_host: str = "127.0.0.1",
        max_restarts: int = 5,
        stop_timeout_s: int = 10,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_backend_dir()
        try:
            self.podman = podman or Podman(state_dir=self.state_dir)
        except PodmanNotInstalledError as exc:
            raise BackendUnavailableError(str(exc)) from None
        self.publish_host = publish_host
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s

    # --- helpers --------------------------------------------------------------------

    def _podman(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        try:
            return self.podman.run(list(args), **kw)
        except PodmanNotInstalledError as exc:
            raise BackendUnavailableError(str(exc)) from None
        except ImageError as exc:
            raise BackendError(str(exc)) from None

    def _deployment_dir(self, namespace: str, name: str) -> Path:
        return self.state_dir / "deployments" / namespace / name

    def _host_key(self) -> bytes:
        path = self.state_dir / "hostname.key"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            # OutputExistsError: another process wrote it first; theirs is read below.
            with contextlib.suppress(ModelsealError):
                write_file(path, secrets.token_bytes(32), mode=0o600)
            return path.read_bytes()

    def hostname(self, namespace: str, name: str) -> str:
        """The container's hostname: stable here, unguessable elsewhere (see the module doc)."""
        mac = hmac.new(
            self._host_key(),
            f"modelseal/podman/hostname/v1\0{namespace}\0{name}".encode(),
            hashlib.sha256,
        )
        return "ms-" + mac.hexdigest()[:24]

    def _image_info(self, image: str) -> dict[str, Any]:
        proc = self._podman(["image", "inspect", image], check=False)
        if proc.returncode != 0:
            raise BackendError(
                f"image {image} is not in podman's store (images are never pulled): "
                "build it with 'modelseal image build' or 'podman load' it"
            )
        info: dict[str, Any] = json.loads(proc.stdout)[0]
        return info

    # --- the protocol ----------------------------------------------------------------

    def apply(
        self, bundle: DeploymentBundle, node_ports: Sequence[int], *, dry_run: bool = False
    ) -> DeploymentStatus:
        deployment = bundle.deployment
        spec = deployment.spec
        namespace, name = deployment.metadata.namespace, deployment.metadata.name
        ports = tuple(int(p) for p in node_ports)
        if len(ports) != spec.node_port_count:
            raise BackendError(
                f"{namespace}/{name} exposes {spec.node_port_count} port(s) but "
                f"{len(ports)} NodePort(s) were given"
            )
        if spec.replicas > 1:
            raise BackendError(
                f"the podman backend runs one replica per deployment (a NodePort is published "
                f"by one container); {namespace}/{name} asks for {spec.replicas}: use the "
                "kubernetes backend, or replicas: 1"
            )
        info = self._image_info(spec.image)
        spec_digest = hashlib.sha256(
            json.dumps(
                {
                    "spec": deployment.to_data(),
                    "ports": ports,
                    "inputs": inputs_digest(bundle),
                    "image": info.get("Id"),
                    "host": self.publish_host,
                    "restarts": self.max_restarts,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        existing = self._containers(namespace, name)
        if dry_run:
            return DeploymentStatus(
                namespace,
                name,
                self.name,
                "Pending",
                spec.replicas,
                0,
                ports,
                f"http://{self.publish_host}:{ports[0]}",
                0,
                "dry run: image present, nothing changed",
                {"image_id": str(info.get("Id", ""))},
            )
        if existing and existing[0]["Labels"].get(LABEL_SPEC) == spec_digest:
            if spec.replicas == 1 and existing[0].get("State") != "running":
                self._podman(["start", existing[0]["Id"]], what="podman start")
            return self.status(namespace, name)
        if existing:
            self._remove(existing)
        args = self._run_args(bundle, ports, info, spec_digest)
        verb = "run" if spec.replicas == 1 else "create"
        self._podman([verb, *args], timeout=120, what=f"podman {verb} of {namespace}/{name}")
        return self.status(namespace, name)

    def _write_inputs(self, bundle: DeploymentBundle, folder: Path, uid: int | None) -> None:
        # The folder is root-only; the files are world-readable so the image's
        # user reads them through the bind mount (the container is the boundary,
        # as with the Secret's 0444 in the manifests).
        # The guard's state folder is kept across re-creation (clock-rollback
        # and quota records); the license and keys are replaced.
        (folder / "guard").mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        files = {LICENSE_KEY: bundle.license}
        if bundle.envelope_key is not None:
            files[ENVELOPE_KEY] = bundle.envelope_key
        if bundle.trust is not None:
            files[bundle.trust[0]] = bundle.trust[1]
        for stale in (ENVELOPE_KEY, "trust.pub", "trust.json"):
            if stale not in files:
                (folder / stale).unlink(missing_ok=True)
        for file_name, text in files.items():
            write_file(folder / file_name, text.encode(), mode=0o444, overwrite=True)
        if uid is not None and os.geteuid() == 0:
            os.chown(folder / "guard", uid, uid)
        os.chmod(folder / "guard", 0o700)

    def _run_args(
        self, bundle: DeploymentBundle, ports: tuple[int, ...], info: dict[str, Any], digest: str
    ) -> list[str]:
        deployment = bundle.deployment
        spec = deployment.spec
        namespace, name = deployment.metadata.namespace, deployment.metadata.name
        config = info.get("Config") or {}
        user = str(config.get("User") or "").split(":", 1)[0]
        uid = int(user) if user.isdigit() else None
        folder = self._deployment_dir(namespace, name)
        self._write_inputs(bundle, folder, uid)
        ours = "io.modelseal.base" in (config.get("Labels") or {})
        labels = {
            LABEL_MANAGED: "modelseal",
            LABEL_DEPLOYMENT: f"{namespace}.{name}",
            LABEL_NAMESPACE: namespace,
            LABEL_NAME: name,
            LABEL_NODE_PORTS: ",".join(map(str, ports)),
            LABEL_SPEC: digest,
            LABEL_INPUTS: inputs_digest(bundle),
            LABEL_REPLICAS: str(spec.replicas),
            LABEL_RESTARTS: str(self.max_restarts),
            LABEL_MODEL: spec.model.name,
            LABEL_MODEL_VERSION: spec.model.version,
            **deployment.metadata.labels,
        }
        if spec.route is not None:
            labels[ANNOTATION_ROUTE] = spec.route.prefix
        args = [
            "--detach",
            "--pull=never",
            "--name",
            _container_name(namespace, name),
            "--hostname",
            self.hostname(namespace, name),
            f"--restart=on-failure:{self.max_restarts}",
            f"--stop-timeout={self.stop_timeout_s}",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
        ]
        if not ours:
            # An image without tini: podman's init forwards SIGTERM (a Python
            # PID 1 would ignore it until its own handler is installed).
            args.append("--init")
        for key, value in sorted(labels.items()):
            args += ["--label", f"{key}={value}"]
        env = {"MODELSEAL_LICENSE": f"{LICENSE_DIR}/{LICENSE_KEY}"}
        args += ["-v", f"{folder / LICENSE_KEY}:{LICENSE_DIR}/{LICENSE_KEY}:ro"]
        if bundle.envelope_key is not None:
            env["MODELSEAL_ENVELOPE_KEY"] = f"{KEYS_DIR}/{ENVELOPE_KEY}"
            args += ["-v", f"{folder / ENVELOPE_KEY}:{KEYS_DIR}/{ENVELOPE_KEY}:ro"]
        if bundle.trust is not None:
            env["MODELSEAL_TRUST"] = f"{KEYS_DIR}/{bundle.trust[0]}"
            args += ["-v", f"{folder / bundle.trust[0]}:{KEYS_DIR}/{bundle.trust[0]}:ro"]
        if ours and uid is not None:
            args += ["-v", f"{folder / 'guard'}:{GUARD_STATE_DIR}"]
        env.update(spec.env)
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        container_ports = [(spec.container_port, "tcp")] + [
            (p.container_port, p.protocol.lower()) for p in spec.extra_ports
        ]
        for node_port, (port, proto) in zip(ports, container_ports, strict=True):
            args += ["--publish", f"{self.publish_host}:{node_port}:{port}/{proto}"]
        for volume in spec.volumes:
            if volume.host_path is None:
                raise BackendError(
                    f"volume {volume.name}: the podman backend mounts hostPath volumes only, "
                    "not persistentVolumeClaim"
                )
            mode = "ro" if volume.read_only else "rw"
            args += ["-v", f"{volume.host_path}:{volume.mount_path}:{mode}"]
        limits, requests = spec.resources.limits, spec.resources.requests
        if limits is not None and limits.memory is not None:
            args.append(f"--memory={_bytes(limits.memory)}")
        if requests is not None and requests.memory is not None:
            args.append(f"--memory-reservation={_bytes(requests.memory)}")
        if limits is not None and limits.cpu is not None:
            if quantity_value(limits.cpu) < Decimal("0.01"):
                raise BackendError(f"resources.limits.cpu {limits.cpu}: podman needs at least 10m")
            args.append(f"--cpus={_cpus(limits.cpu)}")
        if spec.command:
            args.append("--entrypoint=" + json.dumps(spec.command))
        args.append(spec.image)
        args += list(spec.args or [])
        return args

    def _containers(self, namespace: str | None = None, name: str | None = None) -> list[Any]:
        proc = self._podman(
            ["ps", "-a", *_label_filter(namespace, name), "--format", "json"], what="podman ps"
        )
        data = json.loads(proc.stdout or "[]")
        return data if isinstance(data, list) else []

    def _remove(self, containers: list[Any]) -> None:
        for container in containers:
            self._podman(
                ["rm", "--force", "--time", str(self.stop_timeout_s), container["Id"]],
                timeout=self.stop_timeout_s + 60,
                what="podman rm",
            )

    def _probe(self, port: int) -> bool:
        url = f"http://{self.publish_host}:{port}{READY_PATH}"
        try:
            with _DIRECT.open(url, timeout=PROBE_TIMEOUT_S) as answer:
                return bool(200 <= answer.status < 300)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _status_of(self, container: dict[str, Any]) -> DeploymentStatus:
        labels: dict[str, str] = container.get("Labels") or {}
        namespace = labels.get(LABEL_NAMESPACE, "")
        name = labels.get(LABEL_NAME, "")
        ports = tuple(int(p) for p in labels.get(LABEL_NODE_PORTS, "").split(",") if p)
        replicas = int(labels.get(LABEL_REPLICAS, "1"))
        inspect = json.loads(
            self._podman(["container", "inspect", container["Id"]], what="podman inspect").stdout
        )[0]
        state = inspect.get("State") or {}
        restarts = int(inspect.get("RestartCount") or 0)
        max_restarts = int(labels.get(LABEL_RESTARTS, str(self.max_restarts)))
        status = str(state.get("Status", ""))
        ready = 0
        message = ""
        phase: DeploymentPhase
        if status == "running":
            ready = 1 if ports and self._probe(ports[0]) else 0
            if ready:
                phase = "Running"
            elif restarts:
                phase, message = "Degraded", f"restarted {restarts} time(s); not ready yet"
            else:
                phase, message = "Pending", "starting: not ready yet"
        elif status in ("created", "configured") or (status == "exited" and replicas == 0):
            phase, message = "Stopped", "created, not running (replicas: 0)"
        elif status in ("exited", "stopped", "dead"):
            code = int(state.get("ExitCode") or 0)
            last = self._last_log_line(container["Id"])
            if code == 0:
                phase, message = "Stopped", f"exited 0 {last}".strip()
            elif restarts >= max_restarts:
                phase = "Failed"
                message = f"exited {code} after {restarts} restart(s): {last}".rstrip(": ")
            else:
                phase, message = "Degraded", f"exited {code}, restarting: {last}".rstrip(": ")
        else:
            phase, message = "Pending", status
        return DeploymentStatus(
            namespace=namespace,
            name=name,
            backend=self.name,
            phase=phase,
            replicas=replicas,
            ready_replicas=ready,
            node_ports=ports,
            forward_url=f"http://{self.publish_host}:{ports[0]}" if ports else None,
            restarts=restarts,
            message=message,
            details={
                "container": str(container["Id"])[:12],
                "container_name": _container_name(namespace, name),
                "image": str(inspect.get("ImageName") or container.get("Image", "")),
                "image_id": str(inspect.get("Image", "")),
                "image_digest": str(inspect.get("ImageDigest", "")),
                "hostname": str((inspect.get("Config") or {}).get("Hostname", "")),
                "state": status,
            },
        )

    def _last_log_line(self, container_id: str) -> str:
        proc = self._podman(["logs", "--tail", "5", container_id], check=False)
        lines = [ln for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        return (errors or lines or [""])[-1].strip()[:300]

    def status(self, namespace: str, name: str) -> DeploymentStatus:
        found = self._containers(namespace, name)
        if not found:
            raise DeploymentNotFoundError(namespace, name, self.name)
        return self._status_of(found[0])

    def logs(self, namespace: str, name: str, *, tail: int = 200) -> str:
        found = self._containers(namespace, name)
        if not found:
            raise DeploymentNotFoundError(namespace, name, self.name)
        proc = self._podman(["logs", "--tail", str(max(tail, 0)), found[0]["Id"]], check=False)
        # podman replays the container's stdout and stderr on its own two streams.
        return str(proc.stdout) + str(proc.stderr)

    def delete(self, namespace: str, name: str) -> bool:
        found = self._containers(namespace, name)
        self._remove(found)
        folder = self._deployment_dir(namespace, name)
        if folder.exists():
            shutil.rmtree(folder)
        return bool(found)

    def list(self) -> list[DeploymentStatus]:
        out = []
        for container in self._containers():
            try:
                out.append(self._status_of(container))
            except BackendError:
                continue  # removed between ps and inspect
        return sorted(out, key=lambda s: (s.namespace, s.name))

    def used_node_ports(self) -> frozenset[int]:
        """Ports this host cannot publish: listened on by any process, or published
        by containers that are not ours (a stopped one gets its port back on start)."""
        proc = self._podman(["ps", "-a", "--format", "json"], what="podman ps")
        used: set[int] = set()
        for container in json.loads(proc.stdout or "[]") or []:
            if (container.get("Labels") or {}).get(LABEL_MANAGED) == "modelseal":
                continue
            for port in container.get("Ports") or []:
                first = int(port.get("host_port") or 0)
                used.update(range(first, first + int(port.get("range") or 1)))
        used |= listening_ports()
        used.discard(0)
        return frozenset(used)

    def close(self) -> None:
        """Nothing to release: every call is one podman command; containers keep running."""

    # --- beyond the protocol -------------------------------------------------------------

    def device_request(self, namespace: str, name: str, image: str, *, label: str = "") -> str:
        """An activation request made inside ``image`` as this backend would run it.

        Same hostname, same user, no network: the components it lists are the
        ones the deployed container presents, so a license issued from it opens
        there (and nowhere the derived hostname is unknown).
        """
        self._image_info(image)
        proc = self._podman(
            [
                "run",
                "--rm",
                "--pull=never",
                "--network=none",
                "--cap-drop=all",
                "--security-opt=no-new-privileges",
                "--hostname",
                self.hostname(namespace, name),
                "--entrypoint",
                '["modelseal"]',
                image,
                "device",
                "request",
                "--out",
                "-",
                "--label",
                label or f"podman {namespace}/{name}",
            ],
            timeout=120,
            what=f"the activation request inside {image}",
        )
        out: str = proc.stdout
        return out


__all__ = ["PodmanBackend", "default_backend_dir", "listening_ports"]
