"""Small, failure-tolerant readers shared by the fingerprint sources.

A missing file, a permission error or a tool that is not installed means a
component is absent, never an exception: fingerprinting must work as an
unprivileged user in a minimal container.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

#: Runs a command with a timeout; returns its stdout, or None on any failure.
CommandRunner = Callable[[Sequence[str], float], str | None]

_READ_LIMIT: Final = 1 << 20
_OUTPUT_LIMIT: Final = 1 << 20

#: Values firmware and drivers put where a serial or UUID should be. Binding to
#: one of these would bind to every machine with the same lazy firmware.
_PLACEHOLDERS: Final = frozenset(
    {
        "",
        "0",
        "none",
        "null",
        "n/a",
        "na",
        "unknown",
        "default string",
        "to be filled by o.e.m.",
        "to be filled by oem",
        "not specified",
        "not applicable",
        "not available",
        "system serial number",
        "base board serial number",
        "chassis serial number",
        "serial number",
        "0123456789",
        "123456789",
        "1234567890",
        "xxxxxxxxxxxx",
        # A UUID that many boards with unset SMBIOS data report.
        "03000200-0400-0500-0006-000700080009",
    }
)
_REPEATED: Final = re.compile(r"^(.)\1*$")


def read_text(path: Path, *, limit: int = _READ_LIMIT) -> str | None:
    """The file's text (at most ``limit`` bytes), or None if it cannot be read."""
    try:
        with path.open("rb") as f:
            data = f.read(limit)
    except (OSError, ValueError):
        return None
    return data.decode("utf-8", errors="replace")


def clean(text: str | None) -> str | None:
    """Strip whitespace and NULs (sysfs pads serials with both); None if empty."""
    if text is None:
        return None
    text = text.replace("\0", "").strip()
    return text or None


def meaningful(value: str | None) -> str | None:
    """The value, unless it is a known placeholder or one repeated character.

    ``00000000-0000-...`` and ``FFFFFFFF-...`` reduce to one character once
    the dashes are gone; so do ``0000`` serials.
    """
    if value is None or value.lower() in _PLACEHOLDERS:
        return None
    if _REPEATED.match(value.replace("-", "").replace(" ", "").lower()):
        return None
    return value


def run_command(argv: Sequence[str], timeout: float) -> str | None:
    """Run a tool found on PATH; None if it is missing, fails or takes too long."""
    if not argv or shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout[:_OUTPUT_LIMIT].decode("utf-8", errors="replace")
