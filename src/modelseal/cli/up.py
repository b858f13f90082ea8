"""``modelseal up``: the whole system on this machine from one command (docs/quickstart.md)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from modelseal.cli._common import errors_as_exit_codes, out

if TYPE_CHECKING:
    from modelseal.system import Summary


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelseal" / "system"


def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="where everything is kept (default: $XDG_DATA_HOME/modelseal/system)"),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="address the control plane and the gateway listen on (0.0.0.0 or :: "
            "listens everywhere; this machine's own clients then use loopback)"
        ),
    ] = "127.0.0.1",
    controlplane_port: Annotated[int, typer.Option(help="the control plane's port")] = 8400,
    gateway_port: Annotated[int, typer.Option(help="the gateway's port")] = 8000,
    node_port: Annotated[
        int,
        typer.Option(min=1, max=65535, help="the demo deployment's NodePort (on 127.0.0.1)"),
    ] = 30080,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds each step and server may take to start")
    ] = 120.0,
    once: Annotated[
        bool, typer.Option(help="start, check one prediction, stop (for scripts and CI)")
    ] = False,
) -> None:
    """Run the control plane, a demo model deployed by the platform, and the gateway, on SQLite.

    The first run sets everything up and says each command it runs: the
    vendor's control plane and owner login (password + TOTP), the demo model
    sealed, ordered and activated on this machine; the model manager's
    registry, a deployment with the local backend, an API key; the gateway
    follows the control plane's routes. Later runs reuse the data directory.
    Prints the console URL, the owner's login and a curl line for a prediction
    through the gateway; Ctrl-C stops everything.

    Example: modelseal up --data-dir .demo/system
    """
    with errors_as_exit_codes():
        from modelseal.system import SystemOptions, SystemStack

        options = SystemOptions(
            data_dir=(data_dir or _default_data_dir()).resolve(),
            host=host,
            controlplane_port=controlplane_port,
            gateway_port=gateway_port,
            node_port=node_port,
            python=sys.executable,
            startup_timeout_s=timeout,
        )
        stack = SystemStack(
            options,
            report=lambda text: out.print(f"[bold]{text}[/bold]", highlight=False),
            echo=lambda text: out.print(f"  [dim]{text}[/dim]", markup=True, highlight=False),
        )
        stopping: list[int] = []

        def _stop(signum: int, _frame: FrameType | None) -> None:
            stopping.append(signum)

        out.print(f"Data directory: {options.data_dir}", highlight=False)
        summary = stack.start()
        _print_summary(summary)
        if once:
            stack.stop()
            out.print("stopped (--once)")
            return
        out.print("Press Ctrl-C to stop.")
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            stack.watch(lambda: bool(stopping))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            out.print("stopping...")
            stack.stop()
        out.print("stopped; run it again to restart with the same data")


def _print_summary(summary: Summary) -> None:
    """What to do next. Lines a script reads are printed raw, each on one line."""
    admin = summary.admin
    rows = [
        ("console", f"{summary.console_url}"),
        ("control plane", f"{summary.controlplane_url}  (OpenAPI: /openapi.json)"),
        ("gateway", summary.gateway_url),
        ("model service", f"{summary.serve_url}  (NodePort of deployment {summary.deployment_id})"),
        ("license", f"{summary.license_id} (key {summary.license_key})"),
        ("logs", str(summary.logs)),
        (
            "first prediction",
            ", ".join(f"{p:.4f}" for p in summary.prediction) + "  (through the gateway)",
        ),
    ]
    out.print()
    out.print("[bold green]modelseal is up[/bold green]")
    for label, value in rows:
        out.print(f"  {label:<17} {value}", highlight=False, soft_wrap=True)
    out.print()
    out.print("Console login (the first owner; TOTP from an authenticator app):")
    for label, value in (
        ("vendor", admin.vendor),
        ("username", admin.username),
        ("password", admin.password),
        ("TOTP secret", admin.totp_secret),
        ("otpauth URI", admin.otpauth_uri),
        ("recovery codes", str(admin.recovery_codes)),
    ):
        print(f"  {label + ':':<17} {value}", flush=True)
    out.print()
    out.print("Try it (a prediction through the gateway with the demo API key):")
    print(summary.curl_line(), flush=True)
    out.print()
    out.print("Admin with the owner's API token:")
    print(f"  {summary.admin_command()}", flush=True)
