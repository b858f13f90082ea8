"""Take a device's fingerprint: pick the source for this platform and run it."""

from __future__ import annotations

import sys

from modelseal.device.darwin import MacSource
from modelseal.device.errors import UnsupportedPlatformError
from modelseal.device.fingerprint import DeviceFingerprint, FingerprintSource, fingerprint_from
from modelseal.device.linux import LinuxSource
from modelseal.device.windows import WindowsSource


def default_source() -> FingerprintSource:
    """The source that reads this machine: Linux fully, macOS/Windows best-effort."""
    if sys.platform.startswith("linux"):
        return LinuxSource()
    if sys.platform == "darwin":
        return MacSource()
    if sys.platform == "win32":
        return WindowsSource()
    raise UnsupportedPlatformError(f"no device fingerprint source for platform {sys.platform!r}")


def collect(source: FingerprintSource | None = None) -> DeviceFingerprint:
    """The fingerprint of this device (or of what ``source`` describes).

    Components are deduplicated and sorted, so the same machine gives the
    same fingerprint however its sources order them.
    """
    src = default_source() if source is None else source
    return fingerprint_from(src.components(), src.environment())
