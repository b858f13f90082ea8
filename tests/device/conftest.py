"""A fake Linux root (/sys, /proc, /etc) built in tmp_path, for LinuxSource."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from modelseal.device import LinuxSource
from modelseal.device.kubernetes import KubeFetch

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
stepping\t: 7
flags\t\t: fpu vme de pse tsc msr pae

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
stepping\t: 7
flags\t\t: fpu vme de pse tsc msr pae
"""


class FakeRoot:
    """Writes files and relative symlinks under a temporary root."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, relative: str, text: str) -> Path:
        target = self.path / relative.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def mkdir(self, relative: str) -> Path:
        target = self.path / relative.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        return target

    def link(self, relative: str, to: str) -> None:
        """A symlink at ``relative`` pointing at root-relative ``to``, written relatively."""
        link = self.path / relative.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        target = self.path / to.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))

    def nic(
        self,
        name: str,
        mac: str,
        *,
        physical: bool = True,
        assign_type: str | None = "0",
        perm: str | None = None,
    ) -> None:
        base = f"sys/class/net/{name}"
        self.write(f"{base}/address", mac + "\n")
        if physical:
            self.mkdir(f"{base}/device")
        if assign_type is not None:
            self.write(f"{base}/addr_assign_type", assign_type + "\n")
        if perm is not None:
            self.write(f"{base}/bonding_slave/perm_hwaddr", perm + "\n")

    def mountinfo_root(self, number: str, source: str = "/dev/sda2", fstype: str = "ext4") -> None:
        self.write(
            "proc/self/mountinfo",
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
            f"27 1 {number} / / rw,relatime - {fstype} {source} rw\n",
        )

    def source(
        self,
        env: dict[str, str] | None = None,
        *,
        gpus: Sequence[str] = (),
        kube_fetch: KubeFetch | None = None,
    ) -> LinuxSource:
        def no_fetch(url: str, token: str, ca: Path, timeout: float) -> bytes:
            raise AssertionError("no Kubernetes API in this test")

        return LinuxSource(
            self.path,
            env=env or {},
            run=lambda argv, timeout: None,
            kube_fetch=kube_fetch or no_fetch,
            gpus=lambda: list(gpus),
        )


@pytest.fixture
def fake_root(tmp_path: Path) -> FakeRoot:
    root = tmp_path / "root"
    root.mkdir()
    return FakeRoot(root)


def kinds(source: LinuxSource) -> list[str]:
    return sorted(c.kind for c in source.components())


def values(source: LinuxSource, kind: str) -> list[str]:
    return sorted(c.value for c in source.components() if c.kind == kind)
