"""Windows fingerprint: BEST-EFFORT, UNTESTED on real Windows.

modelseal is developed and tested on Linux. This source asks PowerShell
(CIM) for the SMBIOS UUID, board serial and maker/model, and the registry
for ``MachineGuid``; the parsers are unit-tested against captured output,
the commands themselves have never run in CI.

``MachineGuid`` is generated at installation and travels with a cloned disk
image unless it is sysprepped, so it is weak, like Linux's machine-id.
"""

from __future__ import annotations

import re
import socket
from typing import Final

from modelseal.device._io import CommandRunner, clean, meaningful, run_command
from modelseal.device.fingerprint import Component, Environment

_TIMEOUT: Final = 10.0  # PowerShell's cold start alone can take seconds
_CIM_SCRIPT: Final = (
    "$p=Get-CimInstance Win32_ComputerSystemProduct;"
    "$b=Get-CimInstance Win32_BaseBoard;"
    "$s=Get-CimInstance Win32_ComputerSystem;"
    '"uuid=$($p.UUID)";"board=$($b.SerialNumber)";'
    '"vendor=$($s.Manufacturer)";"model=$($s.Model)"'
)
_MACHINE_GUID: Final = re.compile(r"MachineGuid\s+REG_SZ\s+([0-9A-Fa-f-]{36})")
_VM_MODELS: Final = (
    ("vmware", "vmware"),
    ("virtualbox", "virtualbox"),
    ("kvm", "kvm"),
    ("qemu", "qemu"),
    ("xen", "xen"),
    ("amazon ec2", "amazon"),
    ("google compute engine", "google"),
    ("parallels", "parallels"),
)


def parse_key_values(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        cleaned = meaningful(clean(value))
        if sep and cleaned is not None:
            found.setdefault(key.strip().lower(), cleaned)
    return found


def parse_machine_guid(output: str) -> str | None:
    match = _MACHINE_GUID.search(output)
    return match.group(1).lower() if match else None


class WindowsSource:
    """Best-effort Windows source (untested here); components never come from env or config."""

    def __init__(self, *, run: CommandRunner = run_command) -> None:
        self._run = run
        self._cim: dict[str, str] | None = None

    def __repr__(self) -> str:
        return "WindowsSource()"

    def _system(self) -> dict[str, str]:
        if self._cim is None:
            argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command", _CIM_SCRIPT]
            self._cim = parse_key_values(self._run(argv, _TIMEOUT) or "")
        return self._cim

    def components(self) -> list[Component]:
        found: list[Component] = []
        system = self._system()
        if "uuid" in system:
            found.append(Component.of("dmi.product_uuid", system["uuid"].lower()))
        if "board" in system:
            found.append(Component.of("dmi.board_serial", system["board"]))
        key = r"HKLM\SOFTWARE\Microsoft\Cryptography"
        guid = parse_machine_guid(
            self._run(["reg", "query", key, "/v", "MachineGuid"], _TIMEOUT) or ""
        )
        if guid is not None:
            found.append(Component.of("os.machine_id", guid))
        hostname = clean(socket.gethostname())
        if hostname is not None:
            found.append(Component.of("os.hostname", hostname.lower()))
        return found

    def environment(self) -> Environment:
        system = self._system()
        if not system:
            return Environment("unknown", (), "windows")
        vendor, model = system.get("vendor", "").lower(), system.get("model", "").lower()
        evidence = [f"cim:{name}" for needle, name in _VM_MODELS if needle in f"{vendor}\n{model}"]
        if "microsoft corporation" in vendor and "virtual machine" in model:
            evidence.append("cim:hyperv")
        return Environment("vm" if evidence else "none", tuple(evidence), "windows")
