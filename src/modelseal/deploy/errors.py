"""Errors of the deployment library, rooted in :class:`modelseal.ModelsealError`.

A bad spec is a malformed input file (exit code 3, like every other format
error); running out of NodePorts, or asking for ports that are taken, is its
own class (exit code 30) because the fix is operational, not an edit of the
file (docs/cli.md, docs/deploy.md).
"""

from __future__ import annotations

from modelseal.errors import FormatError, ModelsealError

_SHOWN = 10


class DeployError(ModelsealError):
    """Base class of the deployment library's failures (exit code 30).

    Not for a bad spec: that is a :class:`DeploySpecError`, a format error.
    """

    exit_code = 30


class DeploySpecError(FormatError):
    """The deployment spec (or a file it names) is invalid.

    ``problems`` holds every ``(field path, message)`` found, so a user fixes
    the whole file in one pass; ``str()`` shows them one per line, each led
    by its path (``spec.replicas: must be an integer``).
    """

    def __init__(self, problems: list[tuple[str, str]] | str, *, source: str | None = None) -> None:
        self.problems = [("", problems)] if isinstance(problems, str) else list(problems)
        self.source = source
        lines = [f"{path}: {message}" if path else message for path, message in self.problems]
        if len(lines) > _SHOWN:
            # A file can hold a million wrong list items; the message stays one line.
            lines = [*lines[:_SHOWN], f"... and {len(lines) - _SHOWN} more"]
        prefix = f"{source}: " if source else ""
        if len(lines) == 1:
            text = prefix + lines[0]
        else:
            text = f"{prefix}{len(lines)} problems: " + "; ".join(lines)
        super().__init__(text)


class NodePortError(DeployError):
    """NodePorts cannot be allocated as asked."""


class NodePortRangeError(NodePortError):
    """A NodePort range that is malformed or outside 1-65535."""

    exit_code = 2


class NodePortsExhaustedError(NodePortError):
    """Fewer free ports remain in the range than the deployment needs."""


class NodePortUnavailableError(NodePortError):
    """A port asked for by number is out of range, repeated, or already used."""


class NodePortReservationError(NodePortError):
    """The owner already holds a reservation of a different size."""


__all__ = [
    "DeployError",
    "DeploySpecError",
    "NodePortError",
    "NodePortRangeError",
    "NodePortReservationError",
    "NodePortUnavailableError",
    "NodePortsExhaustedError",
]
