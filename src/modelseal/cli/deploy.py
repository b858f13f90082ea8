"""``modelseal deploy``: Kubernetes manifests and Helm charts from a ModelDeployment spec.

The deploy library (and PyYAML) load only when a deploy command runs, so
the rest of the CLI works without the ``deploy`` extra.
"""

from __future__ import annotations

import os
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import ForceOpt, console, errors_as_exit_codes, write_output

app = typer.Typer(
    help="Deploy sealed models: manifests and Helm charts from a ModelDeployment spec.",
    no_args_is_help=True,
)

RANGE_ENV = "MODELSEAL_NODE_PORT_RANGE"
_PORT_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


class ExportFormat(StrEnum):
    yaml = "yaml"
    helm = "helm"


@app.callback()
def _group() -> None:
    """Deploy sealed models: manifests and Helm charts from a ModelDeployment spec."""


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
