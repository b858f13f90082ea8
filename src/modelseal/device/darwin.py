"""macOS fingerprint: BEST-EFFORT, UNTESTED on a real Mac.

modelseal is developed and tested on Linux. This source reads the platform
UUID and serial number from ``ioreg`` and the CPU brand from ``sysctl``;
the parsers are unit-tested against captured output, the commands
themselves have never run in CI. Treat bindings on macOS accordingly.
"""

from __future__ import annotations

import hashlib
import re
import socket
from typing import Final

from modelseal.device._io import CommandRunner, clean, meaningful, run_command
from modelseal.device.fingerprint import Component, Environment

_TIMEOUT: Final = 3.0
_IOREG_STRING: Final = re.compile(r'"(IOPlatformUUID|IOPlatformSerialNumber)"\s*=\s*"([^"]*)"')


def parse_ioreg_platform(output: str) -> dict[str, str]:
    """The platform UUID and serial in ``ioreg -rd1 -c IOPlatformExpertDevice`` output."""
    found: dict[str, str] = {}
    for match in _IOREG_STRING.finditer(output):
        value = meaningful(clean(match.group(2)))
        if value is not None:
            found.setdefault(match.group(1), value)
    return found


class MacSource:
    """Best-effort macOS source (untested here); components never come from env or config."""

    def __init__(self, *, run: CommandRunner = run_command) -> None:
        self._run = run

    def __repr__(self) -> str:
        return "MacSource()"

    def components(self) -> list[Component]:
        found: list[Component] = []
        platform = parse_ioreg_platform(
            self._run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"], _TIMEOUT) or ""
        )
        if "IOPlatformUUID" in platform:
            found.append(Component.of("dmi.product_uuid", platform["IOPlatformUUID"].lower()))
        if "IOPlatformSerialNumber" in platform:
            found.append(Component.of("dmi.product_serial", platform["IOPlatformSerialNumber"]))
        brand = clean(self._run(["sysctl", "-n", "machdep.cpu.brand_string"], _TIMEOUT))
        if brand is not None:
            found.append(Component.of("cpu.id", hashlib.sha256(brand.encode()).hexdigest()))
        hostname = clean(socket.gethostname())
        if hostname is not None:
            found.append(Component.of("os.hostname", hostname.lower()))
        return found

    def environment(self) -> Environment:
        answer = clean(self._run(["sysctl", "-n", "kern.hv_vmm_present"], _TIMEOUT))
        if answer == "1":
            return Environment("vm", ("sysctl:kern.hv_vmm_present",), "darwin")
        if answer == "0":
            return Environment("none", (), "darwin")
        return Environment("unknown", (), "darwin")
