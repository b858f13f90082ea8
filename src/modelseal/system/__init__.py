"""The whole system on one machine, from one command (``modelseal up``; docs/quickstart.md).

A library over the public commands: it starts ``modelseal controlplane``,
``modelseal serve`` and ``modelseal gateway`` as processes and drives the
set-up through ``modelseal admin`` and ``modelseal device activate``, so it
imports no server framework itself.
"""

from __future__ import annotations

from modelseal.system.stack import (
    AdminLogin,
    Layout,
    Summary,
    SystemOptions,
    SystemRunError,
    SystemStack,
    SystemStateError,
)

__all__ = [
    "AdminLogin",
    "Layout",
    "Summary",
    "SystemOptions",
    "SystemRunError",
    "SystemStack",
    "SystemStateError",
]
