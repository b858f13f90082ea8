"""Small, failure-tolerant readers shared by the fingerprint sources.

A missing file, a permission error or a tool that is not installed means a
component is absent, never an exception: fingerprinting must work as an
unprivileged user in a minimal container.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
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


def _system_tool_dirs() -> tuple[str, ...]:
    """Directories a component tool may come from: system locations only the OS writes.

    Never ``PATH``: a fake ``nvidia-smi`` first on ``PATH`` made two GPUs
    appear and opened a license bound to them on a machine with no GPU
    (issue #8, item 13).
    """
    if sys.platform == "win32":  # pragma: no cover - Windows is best-effort, untested here
        import ctypes

        buf = ctypes.create_unicode_buffer(260)
        kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009 - absent off Windows
        root = buf.value if kernel32.GetSystemWindowsDirectoryW(buf, 260) else r"C:\Windows"
        system = os.path.join(root, "System32")
        return (system, os.path.join(system, "WindowsPowerShell", "v1.0"))
    if sys.platform == "darwin":
        return ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
    # Linux: the distribution's directories, and where GPU drivers put nvidia-smi
    # (GKE/COS: /usr/local/nvidia/bin; NVIDIA GPU operator: /run/nvidia/driver/usr/bin).
    return (
        "/usr/bin",
        "/bin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/nvidia/bin",
        "/run/nvidia/driver/usr/bin",
    )


def _owned_by_system(path: str) -> bool:
    """Root owns ``path`` and every directory above it, and none is writable by others.

    A tool whose file or directory another user can write is a tool that
    user can replace.
    """
    if sys.platform == "win32":  # pragma: no cover - ACLs, not modes; System32 is the OS's
        return True
    current = path
    while True:
        try:
            st = os.lstat(current)
        except OSError:
            return False
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def trusted_tool(name: str, dirs: Sequence[str] | None = None) -> str | None:
    """The absolute path of tool ``name`` in a system directory, or None.

    Symlinks are resolved first (``/bin`` is ``/usr/bin`` on merged-/usr
    systems) and the real file must be a root-owned executable in a
    root-owned tree.
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        return None
    suffixes = ("", ".exe") if sys.platform == "win32" else ("",)
    for directory in _system_tool_dirs() if dirs is None else dirs:
        for suffix in suffixes:
            real = os.path.realpath(os.path.join(directory, name + suffix))
            try:
                st = os.stat(real)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and os.access(real, os.X_OK) and _owned_by_system(real):
                return real
    return None


def _tool_environment() -> dict[str, str]:
    """A minimal environment: no ``LD_PRELOAD``/``LD_LIBRARY_PATH``/``PATH`` of the caller."""
    env = {"LC_ALL": "C", "LANG": "C", "PATH": os.pathsep.join(_system_tool_dirs())}
    if sys.platform == "win32":  # pragma: no cover
        for name in ("SystemRoot", "SystemDrive", "windir"):
            if name in os.environ:
                env[name] = os.environ[name]
    return env


def run_command(argv: Sequence[str], timeout: float) -> str | None:
    """Run a system tool by absolute path; None if it is missing, untrusted, fails or hangs.

    ``argv[0]`` is a bare tool name looked up only in :func:`_system_tool_dirs`
    (never ``PATH``), and the tool runs with a minimal environment.
    """
    if not argv:
        return None
    executable = trusted_tool(argv[0])
    if executable is None:
        return None
    try:
        done = subprocess.run(
            [executable, *argv[1:]],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env=_tool_environment(),
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout[:_OUTPUT_LIMIT].decode("utf-8", errors="replace")
