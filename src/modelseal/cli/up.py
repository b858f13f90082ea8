"""``modelseal up``: the whole system on this machine from one command (docs/quickstart.md)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from modelseal.cli._common import errors_as_exit_codes, out


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelseal" / "system"


def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="where everything is kept (default: $XDG_DATA_HOME/modelseal/system)"),
    ] = None,
    host: Annotated[str, typer.Option(help="address every server listens on")] = "127.0.0.1",
    controlplane_port: Annotated[int, typer.Option(help="the control plane's port")] = 8400,
    gateway_port: Annotated[int, typer.Option(help="the gateway's port")] = 8000,
    serve_port: Annotated[int, typer.Option(help="the model service's port")] = 8080,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds each step and server may take to start")
    ] = 120.0,
    once: Annotated[
        bool, typer.Option(help="start, check one prediction, stop (for scripts and CI)")
    ] = False,
) -> None:
    """Run the control plane, a licensed demo model service and the gateway, on SQLite.

    The first run sets everything up (vendor, demo model sealed and ordered,
    this machine activated, gateway keys) and says each command it runs; later
    runs reuse the data directory. Prints a curl line for a prediction through
    the gateway; Ctrl-C stops everything.

    Example: modelseal up --data-dir .demo/system
    """
    with errors_as_exit_codes():
        from modelseal.system import SystemOptions, SystemStack

        options = SystemOptions(
            data_dir=(data_dir or _default_data_dir()).resolve(),
            host=host,
            controlplane_port=controlplane_port,
            gateway_port=gateway_port,
            serve_port=serve_port,
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
        out.print()
        out.print("[bold green]modelseal is up[/bold green]")
        out.print(
            f"  control plane   {summary.controlplane_url}  (OpenAPI: /openapi.json)",
            highlight=False,
        )
        out.print(
            f"  model service   {summary.serve_url}  (answers only envelopes)", highlight=False
        )
        out.print(f"  gateway         {summary.gateway_url}", highlight=False)
        out.print(f"  owner token     {summary.owner_token}", highlight=False)
        out.print(
            f"  license         {summary.license_id} (key {summary.license_key})", highlight=False
        )
        out.print(f"  logs            {summary.logs}", highlight=False)
        out.print(
            "  first prediction through the gateway: "
            + ", ".join(f"{p:.4f}" for p in summary.prediction),
            highlight=False,
        )
        out.print()
        out.print("Try it (a prediction through the gateway with the demo API key):")
        # Printed raw, on one line, so it can be copied or read by a script.
        print(summary.curl_line(), flush=True)
        out.print()
        out.print(
            "Admin: MODELSEAL_SERVER="
            f"{summary.controlplane_url} MODELSEAL_TOKEN_FILE={summary.owner_token} "
            "modelseal admin licenses list",
            highlight=False,
        )
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
