"""``modelseal deploy``: manifests, Helm charts, and deployments on a backend from a spec.

``export`` renders; ``apply``/``status``/``logs``/``delete``/``list`` run a
deployment on a backend (``local``: supervised ``modelseal serve``
processes on this machine; ``kubernetes``; ``podman``). Without a control
plane, the CLI keeps its NodePort reservations in ``DATA_DIR/nodeports.json``
(file-locked, so two calls never double-book a port) and the local
backend's state under ``DATA_DIR/local``.

The deploy library (and PyYAML) load only when a deploy command runs, so
the rest of the CLI works without the ``deploy`` extra.
"""

from __future__ import annotations

import os
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from modelseal.deploy.backends import DeployBackend, DeploymentStatus
    from modelseal.deploy.portstore import FileNodePortStore

from modelseal.cli._common import (
    ForceOpt,
    JsonOpt,
    console,
    emit_json,
    errors_as_exit_codes,
    fail,
    out,
    write_output,
)

app = typer.Typer(
    help="Deploy sealed models: manifests, Helm charts and running deployments from a spec.",
    no_args_is_help=True,
)

RANGE_ENV = "MODELSEAL_NODE_PORT_RANGE"
DATA_DIR_ENV = "MODELSEAL_DEPLOY_DIR"
_PORT_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


class ExportFormat(StrEnum):
    yaml = "yaml"
    helm = "helm"


@app.callback()
def _group() -> None:
    """Deploy sealed models: manifests, Helm charts and running deployments from a spec."""


def parse_ports(text: str, *, ranges: bool) -> list[int]:
    """``30080,30081`` (and ``30000-30010`` where ranges make sense) as a list of ports."""
    if not _PORT_LIST.match(text) or (not ranges and "-" in text):
        example = "30000-30010,30500" if ranges else "30080,30081"
        raise typer.BadParameter(f"expected comma-separated ports such as {example}")
    ports: list[int] = []
    for item in text.split(","):
        low, _, high = item.partition("-")
        start, end = int(low), int(high or low)
        if not 1 <= start <= end <= 65535:
            raise typer.BadParameter(f"{item.strip()} is not a port or range within 1-65535")
        if end - start > 65535:
            raise typer.BadParameter(f"{item.strip()}: range too large")
        ports.extend(range(start, end + 1))
    return ports


def export(
    spec: Annotated[
        Path, typer.Argument(metavar="SPEC.yaml", help="the ModelDeployment spec (YAML)")
    ],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="yaml: multi-document manifests; helm: a chart folder"),
    ] = ExportFormat.yaml,
    out: Annotated[
        Path | None,
        typer.Option(
            help="yaml: file to write (default: stdout); helm: chart folder (default: ./NAME)"
        ),
    ] = None,
    node_ports: Annotated[
        str | None,
        typer.Option(
            help="NodePorts to use, one per exposed port, e.g. 30080 (default: recommended)"
        ),
    ] = None,
    node_port_range: Annotated[
        str | None,
        typer.Option(
            help=f"the cluster's NodePort range (default: ${RANGE_ENV}, else 30000-32767)"
        ),
    ] = None,
    used_ports: Annotated[
        str | None,
        typer.Option(help="ports to avoid when recommending, e.g. 30000-30010,30500"),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Render a spec's Secret, ConfigMap, Service (NodePort) and Deployment.

    Example: modelseal deploy export deploy.yaml | kubectl apply -f -

    Without --node-ports, free NodePorts are recommended from the range
    (contiguous when possible), avoiding --used-ports.
    """
    requested = parse_ports(node_ports, ranges=False) if node_ports is not None else None
    avoid = parse_ports(used_ports, ranges=True) if used_ports is not None else []
    with errors_as_exit_codes():
        from modelseal.deploy import (
            NodePortRange,
            check_node_ports,
            load_bundle,
            manifests_to_yaml,
            recommend_node_ports,
            render_manifests,
            write_helm_chart,
        )

        range_text = node_port_range or os.environ.get(RANGE_ENV) or "30000-32767"
        port_range = NodePortRange.parse(range_text)
        bundle = load_bundle(spec)
        count = bundle.deployment.spec.node_port_count
        if requested is not None:
            ports = check_node_ports(requested, count, avoid, port_range)
        else:
            ports = recommend_node_ports(count, avoid, port_range)
            console.print(
                f"NodePort(s) {', '.join(map(str, ports))}: recommended from {port_range}; "
                "pass --node-ports to choose",
                highlight=False,
            )

        if fmt is ExportFormat.helm:
            target = out if out is not None else Path(bundle.name)
            write_helm_chart(bundle, ports, target, port_range, force=force)
            console.print(f"wrote Helm chart {target}", highlight=False)
            return

        text = manifests_to_yaml(render_manifests(bundle, ports))
        if out is None:
            sys.stdout.write(text)
            return
        # 0600: the manifests carry the license (base64 is not encryption).
        where = write_output(out, text.encode("utf-8"), force=force, mode=0o600, inputs=[spec])
        if where != "standard output":
            console.print(
                f"wrote {where} (Secret, ConfigMap, Service, Deployment)", highlight=False
            )


app.command("export")(export)


# --- running deployments ------------------------------------------------------------


class BackendName(StrEnum):
    local = "local"
    kubernetes = "kubernetes"
    podman = "podman"


BackendOpt = Annotated[
    BackendName | None,
    typer.Option(
        "--backend",
        help="where it runs (default: the backend it was applied to, else local)",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=f"state and NodePort records (default: ${DATA_DIR_ENV}, else "
        "$XDG_DATA_HOME/modelseal/deploy or ~/.local/share/modelseal/deploy)",
    ),
]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(help="kubernetes: kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"),
]
ContextOpt = Annotated[str | None, typer.Option(help="kubernetes: kubeconfig context")]
NodeAddressOpt = Annotated[
    str | None,
    typer.Option(help="kubernetes: node address for forward URLs (default: the API host)"),
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="the deployment's namespace")]


def _data_dir(option: Path | None) -> Path:
    if option is not None:
        return option
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    from modelseal.deploy.backends.local import default_data_dir

    return default_data_dir()


def _store(data_dir: Path) -> FileNodePortStore:
    from modelseal.deploy.portstore import FileNodePortStore

    return FileNodePortStore(data_dir / "nodeports.json")


def _owner(backend: str, namespace: str, name: str) -> str:
    return f"{backend}:{namespace}/{name}"


def _backend(
    name: str,
    data_dir: Path,
    kubeconfig: Path | None,
    context: str | None,
    node_address: str | None,
    local_host: str = "127.0.0.1",
) -> DeployBackend:
    from modelseal.deploy.backends import get_backend

    if name == "local":
        # Detached supervisors: the deployment outlives this command.
        return get_backend("local", data_dir=data_dir, supervise="process", host=local_host)
    if name == "kubernetes":
        return get_backend(
            "kubernetes", kubeconfig=kubeconfig, context=context, node_address=node_address
        )
    return get_backend(name, state_dir=data_dir / name)


def _recorded_backend(data_dir: Path, namespace: str, name: str) -> str:
    """The backend a deployment was applied to, from the NodePort records; else local."""
    suffix = f":{namespace}/{name}"
    for owner in _store(data_dir).reserved():
        if owner.endswith(suffix):
            return owner[: -len(suffix)]
    return "local"


def _row(status: DeploymentStatus) -> dict[str, Any]:
    return {
        "name": f"{status.namespace}/{status.name}",
        "backend": status.backend,
        "phase": status.phase,
        "ready": f"{status.ready_replicas}/{status.replicas}",
        "restarts": status.restarts,
        "nodePorts": ",".join(map(str, status.node_ports)),
        "url": status.forward_url or "",
        "message": status.message,
    }


def _show(statuses: list[DeploymentStatus], title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    columns = ["name", "backend", "phase", "ready", "restarts", "nodePorts", "url", "message"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for status in statuses:
        row = _row(status)
        table.add_row(*(escape(str(row[c])) for c in columns))
    out.print(table)


def apply(
    spec: Annotated[
        Path, typer.Argument(metavar="SPEC.yaml", help="the ModelDeployment spec (YAML)")
    ],
    backend: Annotated[
        BackendName, typer.Option("--backend", help="where it runs")
    ] = BackendName.local,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check everything, start and store nothing")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait until every replica is ready")
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=0, help="seconds --wait waits before giving up (exit 30)")
    ] = 300.0,
    node_ports: Annotated[
        str | None,
        typer.Option(help="NodePorts to use, one per exposed port (default: recommended)"),
    ] = None,
    node_port_range: Annotated[
        str | None,
        typer.Option(help=f"NodePort range (default: ${RANGE_ENV}, else 30000-32767)"),
    ] = None,
    data_dir: DataDirOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    node_address: NodeAddressOpt = None,
    listen: Annotated[
        str,
        typer.Option(
            help="local: address the NodePort listens on (0.0.0.0 exposes it like a "
            "cluster's NodePort)"
        ),
    ] = "127.0.0.1",
    as_json: JsonOpt = False,
) -> None:
    """Create or update a deployment from a spec, on free NodePorts, and wait until it is ready.

    Example: modelseal deploy apply deploy.yaml --backend local

    The NodePorts are reserved in DATA_DIR/nodeports.json (a retried apply
    keeps its ports; delete frees them), avoiding ports the backend reports
    as used (every Service's nodePort on Kubernetes; listening sockets here).
    """
    requested = parse_ports(node_ports, ranges=False) if node_ports is not None else None
    with errors_as_exit_codes():
        from modelseal.deploy import (
            NodePortAllocator,
            NodePortRange,
            check_node_ports,
            load_bundle,
            recommend_node_ports,
        )
        from modelseal.deploy.backends import wait_ready
        from modelseal.deploy.errors import DeployError

        port_range = NodePortRange.parse(
            node_port_range or os.environ.get(RANGE_ENV) or "30000-32767"
        )
        bundle = load_bundle(spec)
        namespace = bundle.deployment.metadata.namespace
        name = bundle.name
        count = bundle.deployment.spec.node_port_count
        directory = _data_dir(data_dir)
        target = _backend(backend.value, directory, kubeconfig, context, node_address, listen)
        try:
            store = _store(directory)
            owner = _owner(backend.value, namespace, name)
            if dry_run:
                held = store.reserved().get(owner)
                used = set(target.used_node_ports()) | {
                    p for o, ports in store.reserved().items() if o != owner for p in ports
                }
                if held is not None and requested is None:
                    ports = held
                elif requested is not None:
                    ports = check_node_ports(requested, count, used - set(held or ()), port_range)
                else:
                    ports = recommend_node_ports(count, used, port_range)
                status = target.apply(bundle, ports, dry_run=True)
            else:
                allocator = NodePortAllocator(store, port_range, target.used_node_ports)
                fresh = owner not in store.reserved()
                ports = allocator.allocate(owner, count, requested=requested)
                try:
                    status = target.apply(bundle, ports)
                except BaseException:
                    if fresh:  # nothing runs on them: give them back
                        allocator.release(owner)
                    raise
                if wait:
                    status = wait_ready(target, namespace, name, timeout_s=timeout)
        finally:
            target.close()
        failed = wait and not dry_run and not status.ready
        if as_json and not failed:
            emit_json({"ok": True, **status.to_json()})
        elif not as_json:
            _show([status], "dry run" if dry_run else f"deployment {namespace}/{name}")
        if failed:
            why = status.message or f"{status.ready_replicas}/{status.replicas} ready"
            fail(
                f"{namespace}/{name} is {status.phase} after waiting up to {timeout:g} s: {why} "
                f"(see: modelseal deploy logs {name} -n {namespace})",
                DeployError.exit_code,
                deployment=status.to_json(),
            )


def status(
    name: Annotated[str, typer.Argument(help="the deployment's metadata.name")],
    namespace: NamespaceOpt = "default",
    backend: BackendOpt = None,
    data_dir: DataDirOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    node_address: NodeAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a deployment's phase, ready replicas, restarts, NodePorts and forward URL.

    Example: modelseal deploy status demo-classifier -n models
    """
    with errors_as_exit_codes():
        directory = _data_dir(data_dir)
        which = backend.value if backend else _recorded_backend(directory, namespace, name)
        target = _backend(which, directory, kubeconfig, context, node_address)
        try:
            current = target.status(namespace, name)
        finally:
            target.close()
        if as_json:
            emit_json({"ok": True, **current.to_json()})
        else:
            _show([current], f"deployment {namespace}/{name}")


def logs(
    name: Annotated[str, typer.Argument(help="the deployment's metadata.name")],
    namespace: NamespaceOpt = "default",
    tail: Annotated[int, typer.Option(min=0, help="how many lines, all replicas")] = 200,
    backend: BackendOpt = None,
    data_dir: DataDirOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the last lines of every replica's output, in time order.

    Example: modelseal deploy logs demo-classifier -n models --tail 50
    """
    with errors_as_exit_codes():
        directory = _data_dir(data_dir)
        which = backend.value if backend else _recorded_backend(directory, namespace, name)
        target = _backend(which, directory, kubeconfig, context, None)
        try:
            text = target.logs(namespace, name, tail=tail)
        finally:
            target.close()
        sys.stdout.write(text)
        sys.stdout.flush()


def delete(
    name: Annotated[str, typer.Argument(help="the deployment's metadata.name")],
    namespace: NamespaceOpt = "default",
    backend: BackendOpt = None,
    data_dir: DataDirOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a deployment, remove what it created and free its NodePorts.

    Example: modelseal deploy delete demo-classifier -n models
    """
    with errors_as_exit_codes():
        from modelseal.deploy.backends import DeploymentNotFoundError

        directory = _data_dir(data_dir)
        which = backend.value if backend else _recorded_backend(directory, namespace, name)
        target = _backend(which, directory, kubeconfig, context, None)
        try:
            existed = target.delete(namespace, name)
        finally:
            target.close()
        freed = _store(directory).release(_owner(which, namespace, name))
        if not existed and not freed:
            raise DeploymentNotFoundError(namespace, name, which)
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "namespace": namespace,
                    "name": name,
                    "backend": which,
                    "deleted": existed,
                    "released_node_ports": list(freed),
                }
            )
        else:
            ports = f"; NodePort(s) {', '.join(map(str, freed))} free" if freed else ""
            console.print(f"deleted {namespace}/{name} on {which}{ports}", highlight=False)


def list_(
    backend: Annotated[
        BackendName, typer.Option("--backend", help="which backend to list")
    ] = BackendName.local,
    data_dir: DataDirOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    node_address: NodeAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the deployments a backend runs for us.

    Example: modelseal deploy list --backend kubernetes --json
    """
    with errors_as_exit_codes():
        directory = _data_dir(data_dir)
        target = _backend(backend.value, directory, kubeconfig, context, node_address)
        try:
            found = target.list()
        finally:
            target.close()
        if as_json:
            emit_json({"ok": True, "deployments": [s.to_json() for s in found]})
        else:
            _show(found, f"deployments on {backend.value}")


app.command("apply")(apply)
app.command("status")(status)
app.command("logs")(logs)
app.command("delete")(delete)
app.command("list")(list_)
