"""macOS and Windows sources (best-effort): parsers against captured output, fake runners."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from modelseal.device import MacSource, UnsupportedPlatformError, WindowsSource, default_source
from modelseal.device.darwin import parse_ioreg_platform
from modelseal.device.linux import LinuxSource
from modelseal.device.windows import parse_key_values, parse_machine_guid

IOREG = """+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000232, registered>
    {
      "IOPlatformSerialNumber" = "C02XK1ZYJGH5"
      "manufacturer" = <"Apple Inc.">
      "IOPlatformUUID" = "6B29FC40-CA47-1067-B31D-00DD010662DA"
      "model" = <"MacBookPro18,3">
    }
"""


def _runner(answers: dict[str, str]) -> object:
    def run(argv: Sequence[str], timeout: float) -> str | None:
        return answers.get(argv[0])

    return run


def test_parse_ioreg() -> None:
    assert parse_ioreg_platform(IOREG) == {
        "IOPlatformSerialNumber": "C02XK1ZYJGH5",
        "IOPlatformUUID": "6B29FC40-CA47-1067-B31D-00DD010662DA",
    }
    assert parse_ioreg_platform("") == {}


def test_mac_source_with_fake_tools() -> None:
    def run(argv: Sequence[str], timeout: float) -> str | None:
        if argv[0] == "ioreg":
            return IOREG
        if argv[-1] == "machdep.cpu.brand_string":
            return "Apple M1 Pro\n"
        if argv[-1] == "kern.hv_vmm_present":
            return "0\n"
        return None

    source = MacSource(run=run)
    kinds = sorted(c.kind for c in source.components())
    assert kinds == ["cpu.id", "dmi.product_serial", "dmi.product_uuid", "os.hostname"]
    assert source.environment().virtualization == "none"
    assert source.environment().platform == "darwin"


def test_mac_source_without_tools() -> None:
    source = MacSource(run=lambda argv, timeout: None)
    assert [c.kind for c in source.components()] == ["os.hostname"]
    assert source.environment().virtualization == "unknown"


REG = """
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography
    MachineGuid    REG_SZ    9B5E1C6A-2F3D-4E5F-8A9B-0C1D2E3F4A5B
"""
CIM = (
    "uuid=4C4C4544-0042-3510-8052-B4C04F4E3232\r\n"
    "board=.7XK2P13.\r\nvendor=QEMU\r\nmodel=Standard PC\r\n"
)


def test_windows_parsers() -> None:
    assert parse_machine_guid(REG) == "9b5e1c6a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"
    assert parse_machine_guid("ERROR: not found") is None
    assert parse_key_values(CIM)["uuid"] == "4C4C4544-0042-3510-8052-B4C04F4E3232"
    assert "board" not in parse_key_values("board=To be filled by O.E.M.\n")


def test_windows_source_with_fake_tools() -> None:
    def run(argv: Sequence[str], timeout: float) -> str | None:
        return {"powershell": CIM, "reg": REG}.get(argv[0])

    source = WindowsSource(run=run)
    comps = {c.kind: c for c in source.components()}
    assert sorted(comps) == ["dmi.board_serial", "dmi.product_uuid", "os.hostname", "os.machine_id"]
    assert comps["os.machine_id"].strength == "weak"
    env = source.environment()
    assert (env.virtualization, env.details, env.platform) == ("vm", ("cim:qemu",), "windows")


def test_windows_source_without_tools() -> None:
    source = WindowsSource(run=lambda argv, timeout: None)
    assert source.environment().virtualization == "unknown"


def test_default_source_by_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    # every platform is set explicitly: the test runs the same on any host
    monkeypatch.setattr("sys.platform", "linux")
    assert isinstance(default_source(), LinuxSource)
    monkeypatch.setattr("sys.platform", "darwin")
    assert isinstance(default_source(), MacSource)
    monkeypatch.setattr("sys.platform", "win32")
    assert isinstance(default_source(), WindowsSource)
    monkeypatch.setattr("sys.platform", "sunos5")
    with pytest.raises(UnsupportedPlatformError):
        default_source()
