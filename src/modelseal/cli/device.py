"""``modelseal device``: this machine's fingerprint and its activation request.

Raw component values are never printed: the table shows a short hash
preview, and the request file carries only salted HMACs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelseal._fs import check_output
from modelseal.cli._common import (
    ForceOpt,
    JsonOpt,
    console,
    emit_json,
    errors_as_exit_codes,
    is_stdio,
    out,
    write_output,
)
from modelseal.device import BindingStrength, DeviceFingerprint, collect, make_request
from modelseal.errors import InvalidArgumentError


def _hostname() -> str:
    """The default label: what the operator calls this machine, trimmed to a valid label."""
    import socket

    name = "".join(ch for ch in socket.gethostname() if ch.isprintable()).strip()
    return name[:64] or "device"


app = typer.Typer(
    help="Fingerprint this device and request a license bound to it.", no_args_is_help=True
)


def _strength_json(report: BindingStrength) -> dict[str, Any]:
    data: dict[str, Any] = {
        "total": report.total,
        "strong": report.strong,
        "weak": report.weak,
        "strong_weight": report.strong_weight,
        "weak_weight": report.weak_weight,
        "summary": report.summary(),
    }
    if report.threshold is not None:
        data["threshold"] = report.threshold
        data["weak_only_can_meet"] = report.weak_only_can_meet(report.threshold)
    return data


def _environment_json(fp: DeviceFingerprint) -> dict[str, Any]:
    env = fp.environment
    return {
        "virtualization": env.virtualization,
        "details": list(env.details),
        "platform": env.platform,
    }


@app.command("fingerprint")
def fingerprint(
    threshold: Annotated[
        int | None,
        typer.Option(min=1, help="also say whether weak components alone reach this threshold"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show this device's components (kind, strength, weight, hash preview) and environment.

    Values are never shown, only the first 8 hex digits of a hash of each.

    Example: modelseal device fingerprint --threshold 3
    """
    with errors_as_exit_codes():
        fp = collect()
        report = fp.strength_report(threshold)
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "components": [
                        {
                            "kind": c.kind,
                            "strength": c.strength,
                            "weight": c.weight,
                            "preview": c.preview,
                        }
                        for c in fp.components
                    ],
                    "environment": _environment_json(fp),
                    "strength": _strength_json(report),
                }
            )
            return
        table = Table(title="device fingerprint")
        table.add_column("kind")
        table.add_column("strength")
        table.add_column("weight", justify="right")
        table.add_column("preview")
        for c in fp.components:
            style = "green" if c.strength == "strong" else "yellow"
            table.add_row(c.kind, f"[{style}]{c.strength}[/]", str(c.weight), c.preview)
        out.print(table)
        env = fp.environment
        evidence = ", ".join(env.details) or "no evidence"
        out.print(
            f"environment: {env.platform}, {env.virtualization} ({evidence})", highlight=False
        )
        out.print(f"binding: {report.summary()}", highlight=False)


@app.command("request")
def request(
    label: Annotated[
        str | None,
        typer.Option(
            help="a name for this device the vendor will see, e.g. 'lab-gpu-01' "
            "(default: the hostname)"
        ),
    ] = None,
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="where to write the request (- for stdout)")
    ] = Path("request.json"),
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an activation request for this device, to send to the model vendor.

    The file (mode 0600) holds salted hashes of the components and the
    per-component secrets the vendor wraps key shares with: send it over a
    channel you trust and delete it once the license has arrived.

    Example: modelseal device request --label lab-gpu-01 --out request.json
    """
    with errors_as_exit_codes():
        if as_json and is_stdio(out_path):
            raise InvalidArgumentError("--json and --out - would both write to stdout")
        if not is_stdio(out_path):
            check_output(out_path, overwrite=force)
        fp = collect()
        req = make_request(fp, label=label if label is not None else _hostname())
        where = write_output(out_path, req.to_bytes(), force=force, mode=0o600)
        report = fp.strength_report()
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "path": str(out_path),
                    "written": [str(out_path)],
                    "label": req.label,
                    "nonce": req.nonce,
                    "created_at": req.created_at,
                    "environment": _environment_json(fp),
                    "components": [
                        {"kind": c.kind, "strength": c.strength, "weight": c.weight}
                        for c in req.components
                    ],
                    "strength": _strength_json(report),
                }
            )
            return
        if is_stdio(out_path):
            return
        out.print(
            f"[green]wrote[/] {escape(where)}: the activation request for "
            f"{escape(req.label)} (mode 0600)"
        )
        out.print(f"  binding: {report.summary()}", highlight=False)
        if report.strong == 0:
            console.print(
                "[yellow]warning:[/] no strong component on this device; "
                "a license bound to it binds only to values a disk image carries"
            )
        console.print(
            "[dim]the file holds per-component secrets: send it to the vendor over a "
            "trusted channel and delete it afterwards[/]"
        )
