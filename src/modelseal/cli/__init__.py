"""The ``modelseal`` command line (Typer + rich).

Conventions shared by every command (exit codes, ``--force``, ``--json``,
``-`` for standard streams, one-line errors): ``cli/_common.py`` and
docs/cli.md.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from modelseal.cli import (
    _common,
    admin,
    admin_people,  # noqa: F401 (registers admin users|audit, licenses unlock-code)
    audit,
    controlplane,
    demo,
    deploy,
    device,
    device_activate,
    device_release,
    gateway,
    guard,
    image,
    keys,
    license,
    platform,
    seal,
    serve,
    up,
)

app = typer.Typer(
    name="modelseal",
    help="Seal AI models, license them to devices, and enforce the license at run time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from modelseal import __version__

        _common.out.print(f"modelseal {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Seal AI models, license them to devices, and enforce the license at run time.

    Exit codes: docs/cli.md (0 ok, 1 bug, 2 usage, 3 bad input, 4 tampered,
    5 key, 6-7 framework, 8 cannot write, 10-20 license and guard, 21-25
    license server, 26-27 serve and gateway, 30 deploy, 31 modelseal up).
    """


app.add_typer(keys.app, name="keys")
app.add_typer(device.app, name="device")
app.add_typer(license.app, name="license")
app.add_typer(guard.app, name="guard")
app.add_typer(audit.app, name="audit")
app.add_typer(controlplane.app, name="controlplane")
app.add_typer(admin.app, name="admin")
device.app.command("activate")(device_activate.activate)
device.app.command("release")(device_release.release)
app.add_typer(deploy.app, name="deploy")
app.command("seal")(seal.seal)
app.command("inspect")(seal.inspect)
app.command("verify")(seal.verify)
app.command("serve")(serve.serve)
app.add_typer(gateway.app, name="gateway")
app.add_typer(image.app, name="image")
app.add_typer(platform.app, name="platform")
app.command("up")(up.up)
app.command("demo")(demo.demo)


def main() -> NoReturn:
    _common.main(lambda: app)
