"""The ``modelseal`` command line (Typer + rich). Exit codes: see ``_common``."""

from __future__ import annotations

import typer

from modelseal.cli import audit, deploy, device, guard, keys, license, seal

app = typer.Typer(
    name="modelseal",
    help="Seal AI models, license them to devices, and enforce the license at run time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(device.app, name="device")
app.add_typer(license.app, name="license")
app.add_typer(guard.app, name="guard")
app.add_typer(audit.app, name="audit")
app.add_typer(deploy.app, name="deploy")
app.command("seal")(seal.seal)
app.command("inspect")(seal.inspect)
app.command("verify")(seal.verify)


def main() -> None:
    app()
