"""The ``modelseal`` console script: Ctrl-C is handled before anything heavy loads.

This module and ``import modelseal`` import almost nothing, so the SIGINT
handler is in place before the command modules (and numpy, cryptography,
pydantic...) load: Ctrl-C at any moment of start-up is one ``error:
interrupted`` line and exit 130, never a traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


class _Interrupted(BaseException):
    """Ctrl-C, raised by our SIGINT handler: a BaseException that is not a
    KeyboardInterrupt, so no library (Typer included) turns it into a silent exit."""


def _on_sigint(_signum: int, _frame: object) -> None:
    raise _Interrupted


def main() -> NoReturn:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        from modelseal.cli import main as cli_main
    except _Interrupted:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    cli_main()
