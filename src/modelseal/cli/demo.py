"""``modelseal demo``: the offline library demo (seal, load, license by hand; no server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import errors_as_exit_codes, fail, out


def _default_work_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelseal" / "demo"


def demo(
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="where the demo writes its files; emptied on the next run "
            "(default: $XDG_DATA_HOME/modelseal/demo)"
        ),
    ] = None,
) -> None:
    """Seal a small torch model, load it from memory, license it to this device offline.

    No server: the library and the offline licensing flow, step by step, with
    tampering and a wrong key refused. The whole system is `modelseal up`.
    Needs the torch and safetensors extras.

    Example: modelseal demo --work-dir .demo/offline
    """
    with errors_as_exit_codes():
        from modelseal.errors import MissingDependencyError

        try:
            from modelseal.system import offline_demo
        except ImportError as exc:
            raise MissingDependencyError(
                f"the demo needs torch and safetensors: pip install 'modelseal[torch,safetensors]' "
                f"({exc})"
            ) from None
        code = offline_demo.run((work_dir or _default_work_dir()).resolve(), out)
        if code != 0:
            fail("the demo did not behave as expected (see above)", 1)
